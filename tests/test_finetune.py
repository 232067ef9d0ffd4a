import json

import torch

from galaxymorph.models import load_checkpoint
from galaxymorph.training import TrainConfig, train


def relabelled(catalog, tmp_path):
    """The synthetic galaxies with a new question: is the galaxy blue (spiral-made) or red?"""
    lines = catalog.read_text().splitlines()
    rows = [line.replace(",spiral", ",blue").replace(",elliptical", ",red") for line in lines[1:]]
    path = catalog.parent / "colours.csv"
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    return path


def finetune(trained_checkpoint, labels, output, **settings):
    return load_checkpoint(train(TrainConfig(labels=labels, output=output, classes="labels", init_from=str(trained_checkpoint),
                                             batch_size=32, workers=0, progress=False, use_cache=False, **settings)))


def test_frozen_epochs_train_only_the_new_head(trained_checkpoint, synthetic_catalog, tmp_path):
    pretrained = load_checkpoint(trained_checkpoint).model
    tuned = finetune(trained_checkpoint, relabelled(synthetic_catalog, tmp_path), tmp_path / "head.pt",
                     epochs=2, freeze_epochs=2)
    assert tuned.classes == ("blue", "red")
    for block, pretrained_block in zip(tuned.model.feature_blocks(), pretrained.feature_blocks()):
        for (name, value), pretrained_value in zip(block.state_dict().items(), pretrained_block.state_dict().values()):
            assert torch.equal(value, pretrained_value), name
    assert not torch.equal(tuned.model.output_layer().bias, pretrained.output_layer().bias)
    training = json.loads((tmp_path / "head.json").read_text())["training"]
    assert training["init_from"] == str(trained_checkpoint) and training["freeze_epochs"] == 2


def test_partly_unfrozen_backbone_trains_only_its_last_blocks(trained_checkpoint, synthetic_catalog, tmp_path):
    pretrained = load_checkpoint(trained_checkpoint).model
    tuned = finetune(trained_checkpoint, relabelled(synthetic_catalog, tmp_path), tmp_path / "partly.pt",
                     epochs=3, freeze_epochs=1, unfrozen_blocks=1)
    blocks, pretrained_blocks = tuned.model.feature_blocks(), pretrained.feature_blocks()
    for block, pretrained_block in zip(blocks[:-1], pretrained_blocks[:-1]):
        assert all(torch.equal(a, b) for a, b in zip(block.state_dict().values(), pretrained_block.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(blocks[-1].parameters(), pretrained_blocks[-1].parameters()))
    assert tuned.metadata["metrics"]["validation"]["accuracy"] > 0.9


def test_a_fine_tuned_model_on_a_new_question_is_evaluated_on_its_own_classes(trained_checkpoint, synthetic_catalog, tmp_path):
    from galaxymorph.evaluation import evaluate

    labels = relabelled(synthetic_catalog, tmp_path)
    finetune(trained_checkpoint, labels, tmp_path / "colours.pt", epochs=2, freeze_epochs=1)
    metrics = evaluate(labels, tmp_path / "evaluation", model=tmp_path / "colours.pt", split="val")
    assert "spiral_vs_elliptical" not in metrics
    assert metrics["classes"]["labels"] == ["blue", "red"] and metrics["classes"]["accuracy"] > 0.8
    assert (tmp_path / "evaluation" / "confusion.png").is_file()


def test_training_on_from_a_model_with_the_same_classes_keeps_its_output_layer(trained_checkpoint, synthetic_catalog, tmp_path):
    from typer.testing import CliRunner

    from galaxymorph.cli import app

    lines = synthetic_catalog.read_text().splitlines()
    spirals = [line for line in lines[1:] if line.endswith(",spiral")]
    imbalanced = synthetic_catalog.parent / "few-spirals.csv"  # unequal class weights: their prior must cancel out
    imbalanced.write_text("\n".join([lines[0], *[line for line in lines[1:] if line not in spirals[::2]]]) + "\n")
    output = tmp_path / "more.pt"
    result = CliRunner().invoke(app, ["train", str(imbalanced), "--from", str(trained_checkpoint), "-o", str(output),
                                      "--epochs", "1", "--lr", "1e-12", "--workers", "0"])
    assert result.exit_code == 0, result.output
    pretrained, more = load_checkpoint(trained_checkpoint), load_checkpoint(output)
    assert more.metadata["training"]["class_weights"][0] != more.metadata["training"]["class_weights"][1]
    for value, pretrained_value in zip(more.model.output_layer().state_dict().values(),
                                       pretrained.model.output_layer().state_dict().values()):
        torch.testing.assert_close(value, pretrained_value, atol=1e-6, rtol=0)
