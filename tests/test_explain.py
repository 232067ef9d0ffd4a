"""Explanations: maps that look at the galaxy, depend on what the model learnt, and feature maps."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from galaxymorph.cli import app
from galaxymorph.explain import METHODS, attributions, explain, feature_maps, rank_correlation, share_inside
from galaxymorph.models import LoadedModel, create_model, load_model
from galaxymorph.preprocess.framing import central_segment
from galaxymorph.sources.synthetic import write_examples


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory):
    return write_examples(tmp_path_factory.mktemp("galaxies"), 8, seed=21, size=256)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", ["galaxynet", "seed"])
def test_every_method_gives_a_normalised_map_for_the_predicted_class(galaxies, model, method):
    explanation = explain(model, galaxies[0][0], method=method)
    assert explanation.attribution.shape == (64, 64) and explanation.image.shape == (3, 64, 64)
    assert explanation.attribution.min() >= 0 and explanation.attribution.max() == pytest.approx(1.0)
    assert explanation.target == max(explanation.probabilities, key=explanation.probabilities.get)
    assert 0 <= explanation.p_spiral <= 1


def test_a_chosen_class_is_explained_and_an_unknown_one_refused(galaxies):
    assert explain("seed", galaxies[0][0], target="spiral").target == "spiral"
    with pytest.raises(ValueError, match="classes"):
        explain("seed", galaxies[0][0], target="bar")


def test_maps_depend_on_the_learnt_weights(galaxies):
    """Adebayo et al.'s randomisation check: a re-initialised model gives unrelated maps."""
    loaded = load_model("galaxynet")
    torch.manual_seed(0)
    randomised = LoadedModel("random", create_model("galaxynet").eval(), loaded.preprocessing, loaded.metadata)
    images = np.stack([explain(loaded, path).image for path, _ in galaxies])
    trained_maps, targets = attributions(loaded, images)
    random_maps, _ = attributions(randomised, images, targets=targets)
    assert np.mean([rank_correlation(a, b) for a, b in zip(trained_maps, random_maps)]) < 0.5
    segments = [central_segment(image.mean(axis=0)) for image in images]
    assert all(segment is not None for segment in segments)
    shares = [share_inside(m, segment) for m, segment in zip(trained_maps, segments)]
    assert all(0 <= share <= 1 for share in shares)


def test_seed_feature_maps_show_edges_then_shapes(galaxies):
    maps = feature_maps("seed", galaxies[0][0])
    assert {name: m.shape for name, m in maps.items()} == {"Conv1_Edges": (32, 62, 62), "Conv2_Shapes": (64, 29, 29)}
    assert all(m.min() >= 0 for m in maps.values())


def test_cli_explains_folders_and_catalogs_like_classify(tmp_path, galaxies):
    folder = galaxies[0][0].parent
    (tmp_path / "catalog.csv").write_text(f"id,file\nM51,{galaxies[1][0]}\n")
    result = CliRunner().invoke(app, ["explain", str(folder), str(tmp_path / "catalog.csv"), "--model", "seed",
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = {path.name for path in (tmp_path / "out").iterdir()}
    assert {f"{path.stem}.png" for path, _ in galaxies} | {"M51.png", "M51.npy"} <= written
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["explain", str(empty), "-o", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no image found" in result.output


def test_cli_writes_overlays_arrays_and_feature_grids_and_reports_bad_files(tmp_path, galaxies):
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["explain", str(galaxies[0][0]), str(broken), "--model", "seed",
                                      "--feature-maps", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    stem = galaxies[0][0].stem
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == sorted([f"{stem}.png", f"{stem}.npy", f"{stem}-Conv1_Edges.png", f"{stem}-Conv2_Shapes.png"])
    assert np.load(tmp_path / "out" / f"{stem}.npy").shape == (64, 64)
    assert "broken.jpeg" in result.output and "not a readable image" in result.output
