import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from galaxymorph import (ModelError, PretrainConfig, ServiceSettings, TrainConfig, classify, combine_checkpoints, embed,
                         load_model, pretrain)
from galaxymorph.cli import app
from galaxymorph.service import create_app
from galaxymorph.training.pretrain import contrastive_loss
from galaxymorph.training.train import start_model

runner = CliRunner()


@pytest.fixture(scope="module")
def encoder(synthetic_catalog, tmp_path_factory):
    """An encoder pre-trained for three epochs on the synthetic galaxies' images, labels unused, and a
    file that is not an image."""
    folder = tmp_path_factory.mktemp("encoder")
    (folder / "broken.jpeg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="1 unreadable images left out of pre-training, e.g. .*broken.jpeg"):
        return pretrain(PretrainConfig(inputs=[synthetic_catalog.parent / "images", folder / "broken.jpeg"],
                                       output=folder / "encoder.pt", epochs=3, batch_size=32, workers=0, progress=False))


def test_the_pretrain_command_refuses_settings_that_cannot_train(tmp_path):
    for option, value in (("--epochs", "0"), ("--batch-size", "1")):
        result = runner.invoke(app, ["pretrain", str(tmp_path), "-o", str(tmp_path / "encoder.pt"), option, value])
        assert result.exit_code == 2 and "at least 1 epoch and 2 galaxies a batch" in result.output


def test_contrastive_loss_is_low_when_each_view_finds_its_partner():
    generator = torch.Generator().manual_seed(0)
    views = torch.randn(16, 8, generator=generator)
    agreeing = contrastive_loss(views, views + 0.01 * torch.randn(16, 8, generator=generator), temperature=0.1)
    unrelated = contrastive_loss(views, torch.randn(16, 8, generator=generator), temperature=0.1)
    assert agreeing < 0.5 < np.log(31) - 0.5 < unrelated


def test_pretraining_writes_an_encoder_that_learnt_and_says_what_it_is(encoder):
    metadata = json.loads(encoder.with_suffix(".json").read_text())
    assert metadata["encoder_only"] is True and metadata["training"]["objective"].startswith("SimCLR")
    history = metadata["training"]["history"]
    assert len(history) == 3 and metadata["training"]["images"] == 240
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.15  # views learn to find their partners


def test_an_encoder_embeds_but_does_not_classify(encoder, synthetic_catalog, tmp_path):
    images = synthetic_catalog.parent / "images"
    earlier = tmp_path / "morphology.csv"
    earlier.write_text("id,label\nNGC1300,spiral\n")
    for refused in (lambda: classify([images], earlier, model=encoder),
                    lambda: combine_checkpoints([encoder, encoder], tmp_path / "ensemble.pt"),
                    lambda: create_app(ServiceSettings(model=str(encoder)))):
        with pytest.raises(ModelError, match="encoder from `galaxymorph pretrain`"):
            refused()
    assert earlier.read_text() == "id,label\nNGC1300,spiral\n"  # refused before the output was opened
    embed([images], tmp_path / "emb.parquet", model=encoder)
    vectors = np.stack(pq.read_table(tmp_path / "emb.parquet").column("embedding").to_numpy(zero_copy_only=False))
    assert vectors.shape == (240, 128) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_fine_tuning_starts_from_the_encoder_with_a_new_output_layer(encoder, synthetic_catalog, tmp_path):
    model, architecture, _, kept_output_layer = start_model(
        TrainConfig(labels=synthetic_catalog, output=tmp_path / "tuned.pt", init_from=str(encoder), workers=0), ("elliptical", "spiral"))
    pretrained = load_model(encoder).model
    assert architecture == "galaxynet" and not kept_output_layer
    assert torch.equal(model.stem[0][0].weight, pretrained.stem[0][0].weight)
    assert not torch.equal(model.classifier.weight, pretrained.classifier.weight)
