"""Ensembles: members trained on one split, combined into one checkpoint whose logits are their mean
and whose members' disagreement is the p_spiral_std column."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from galaxymorph.cli import app
from galaxymorph.errors import ModelError
from galaxymorph.explain import attributions
from galaxymorph.models import load_checkpoint, save_checkpoint
from galaxymorph.prediction import Classifier, PredictOptions, predict
from galaxymorph.sources.synthetic import write_examples
from galaxymorph.training import TrainConfig, combine_checkpoints
from galaxymorph.training.train import start_model

runner = CliRunner()


def another_member(checkpoint, path, seed=1):
    """A second member of the same split: the checkpoint's weights, nudged as another seed would."""
    loaded = load_checkpoint(checkpoint)
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.add_(0.1 * parameter.abs().mean() * torch.randn_like(parameter))
    kept = {k: v for k, v in loaded.metadata.items() if k in ("training", "split", "metrics")}
    return save_checkpoint(loaded.model, path, architecture=loaded.metadata["architecture"],
                           preprocessing=loaded.preprocessing, **kept)


@pytest.fixture(scope="module")
def members(trained_checkpoint, tmp_path_factory):
    return [trained_checkpoint, another_member(trained_checkpoint, tmp_path_factory.mktemp("member") / "second.pt")]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(6, 3, 64, 64)).astype(np.float32)


def test_an_ensemble_averages_its_members_and_reports_their_spread(members, images, tmp_path):
    ensemble = load_checkpoint(combine_checkpoints(members, tmp_path / "ensemble.pt"))
    singles = [load_checkpoint(member) for member in members]
    assert ensemble.metadata["members"] == 2 and ensemble.metadata["split"] == singles[0].metadata["split"]
    with torch.no_grad():
        member_logits = [single.model(torch.from_numpy(images)) for single in singles]
        assert torch.allclose(ensemble.model(torch.from_numpy(images)), (member_logits[0] + member_logits[1]) / 2, atol=1e-6)
    probabilities, spread = Classifier(ensemble, backend="torch").probabilities(images)
    expected_spiral = torch.sigmoid((member_logits[0] + member_logits[1]) / 2)[:, 0].numpy()
    np.testing.assert_allclose(probabilities[:, 1], expected_spiral, atol=1e-6)
    member_spiral = np.stack([Classifier(single, backend="torch").probabilities(images)[0][:, 1] for single in singles])
    np.testing.assert_allclose(spread, member_spiral.std(axis=0), atol=1e-9)
    assert (spread > 0).all()


def test_onnx_runs_the_ensemble_like_torch(members, images, tmp_path):
    ensemble = load_checkpoint(combine_checkpoints(members, tmp_path / "ensemble.pt"))
    for tta in (False, True):
        onnx = Classifier(ensemble, backend="onnx", tta=tta).probabilities(images)
        torch_result = Classifier(ensemble, backend="torch", tta=tta).probabilities(images)
        for onnx_values, torch_values in zip(onnx, torch_result):
            np.testing.assert_allclose(onnx_values, torch_values, atol=1e-5)


def test_identical_members_change_nothing_but_the_spread(trained_checkpoint, images, tmp_path):
    single = load_checkpoint(trained_checkpoint)
    ensemble = load_checkpoint(combine_checkpoints([trained_checkpoint] * 3, tmp_path / "copies.pt"))
    probabilities, spread = Classifier(ensemble, backend="torch").probabilities(images)
    np.testing.assert_allclose(probabilities, Classifier(single, backend="torch").probabilities(images)[0], atol=1e-6)
    np.testing.assert_allclose(spread, 0.0, atol=1e-9)
    maps, targets = attributions(single, images)
    ensemble_maps, ensemble_targets = attributions(ensemble, images)
    np.testing.assert_array_equal(ensemble_targets, targets)
    np.testing.assert_allclose(ensemble_maps, maps, atol=1e-5)


def test_members_must_share_split_classes_and_preprocessing(members, tmp_path):
    loaded = load_checkpoint(members[1])
    split = dict(loaded.metadata["split"], seed=7)
    elsewhere = save_checkpoint(loaded.model, tmp_path / "elsewhere.pt", architecture=loaded.metadata["architecture"],
                                preprocessing=loaded.preprocessing, split=split)
    with pytest.raises(ModelError, match=r"elsewhere.pt: its split differs"):
        combine_checkpoints([members[0], elsewhere], tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="at least two"):
        combine_checkpoints(members[:1], tmp_path / "bad.pt")
    nested = combine_checkpoints(members, tmp_path / "nested.pt")
    with pytest.raises(ModelError, match="already an ensemble"):
        combine_checkpoints([nested, members[0]], tmp_path / "bad.pt")


def test_cli_combines_calibrates_and_classifies_with_the_spread(members, synthetic_catalog, tmp_path):
    output = tmp_path / "ensemble.pt"
    result = runner.invoke(app, ["ensemble", *map(str, members), "-o", str(output)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["calibrate", str(output), str(synthetic_catalog), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads(output.with_suffix(".json").read_text())["calibration"]["temperature"] > 0
    paths = [path for path, _ in write_examples(tmp_path / "galaxies", 4, seed=5)]
    rows = next(predict(paths, output, options=PredictOptions(workers=0)))
    assert all(0 <= row["p_spiral_std"] < 0.5 for row in rows)  # NaN (no spread measured) fails
    result = runner.invoke(app, ["ensemble", str(members[0]), str(tmp_path / "missing.pt"), "-o", str(tmp_path / "bad.pt")])
    assert result.exit_code != 0 and "missing" in result.output


def test_fine_tuning_from_an_ensemble_starts_from_its_first_member(members, synthetic_catalog, tmp_path):
    ensemble = combine_checkpoints(members, tmp_path / "ensemble.pt")
    config = TrainConfig(labels=synthetic_catalog, output=tmp_path / "tuned.pt", classes="labels", init_from=str(ensemble))
    model, _, _, _ = start_model(config, ("ring", "no_ring"))
    first = load_checkpoint(members[0]).model
    for block, first_block in zip(model.feature_blocks(), first.feature_blocks()):
        for value, first_value in zip(block.state_dict().values(), first_block.state_dict().values()):
            assert torch.equal(value, first_value)
