import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from galaxymorph import ModelError, TrainConfig, classify, embed, load_model
from galaxymorph.cli import app
from galaxymorph.training.pretrain import contrastive_loss
from galaxymorph.training.train import start_model

runner = CliRunner()


@pytest.fixture(scope="module")
def encoder(synthetic_catalog, tmp_path_factory):
    """An encoder pre-trained for two epochs on the synthetic galaxies' images, labels unused, plus a
    file that is not an image."""
    folder = tmp_path_factory.mktemp("encoder")
    (folder / "broken.jpeg").write_bytes(b"not a jpeg")
    result = runner.invoke(app, ["pretrain", str(synthetic_catalog.parent / "images"), str(folder / "broken.jpeg"),
                                 "-o", str(folder / "encoder.pt"), "--epochs", "2", "--batch-size", "32", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "1 unreadable images left out of pre-training, e.g." in result.output and "broken.jpeg" in result.output
    return folder / "encoder.pt"


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
    assert len(history) == 2 and metadata["training"]["images"] == 240
    assert history[-1]["train_loss"] < np.log(2 * 32 - 1)  # below chance: views find their partners


def test_an_encoder_embeds_but_does_not_classify(encoder, synthetic_catalog, tmp_path):
    images = synthetic_catalog.parent / "images"
    with pytest.raises(ModelError, match="encoder from `galaxymorph pretrain`"):
        classify([images], tmp_path / "morphology.csv", model=encoder)
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
