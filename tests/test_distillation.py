"""Distillation: one network learns an ensemble's probabilities, with one head per member, so that
its p_spiral_std stays."""

import json

import numpy as np
import pytest
import torch

from galaxymorph.errors import ModelError
from galaxymorph.models import create_model, load_checkpoint, load_model, save_checkpoint
from galaxymorph.prediction import Classifier, PredictOptions, predict
from galaxymorph.preprocess.parallel import model_inputs
from galaxymorph.sources.synthetic import write_examples
from galaxymorph.training import TrainConfig, combine_checkpoints, train
from galaxymorph.training.train import distillation_loss, start_model


@pytest.fixture(scope="module")
def teacher(trained_checkpoint, tmp_path_factory):
    """Two members that differ by a known amount: the second's spiral logit is 3 higher."""
    folder = tmp_path_factory.mktemp("teacher")
    shifted = load_checkpoint(trained_checkpoint)
    with torch.no_grad():
        shifted.model.output_layer().bias += 3.0
    kept = {key: value for key, value in shifted.metadata.items() if key in ("training", "split", "metrics")}
    second = save_checkpoint(shifted.model, folder / "shifted.pt", architecture="galaxynet",
                             preprocessing=shifted.preprocessing, **kept)
    return combine_checkpoints([trained_checkpoint, second], folder / "ensemble.pt")


def member_logits(model, images):
    with torch.no_grad():
        return model.member_outputs(torch.from_numpy(images))[0][..., 0].numpy()


@pytest.fixture(scope="module")
def student(teacher, trained_checkpoint, synthetic_catalog, tmp_path_factory):
    return train(TrainConfig(labels=synthetic_catalog, output=tmp_path_factory.mktemp("student") / "student.pt", epochs=3,
                             batch_size=32, workers=0, progress=False, use_cache=False, init_from=trained_checkpoint,
                             teacher=str(teacher)))


def test_a_student_with_a_head_per_member_learns_each_member(student, teacher, synthetic_catalog):
    """Both heads start as one network (the first member); the second moves to the second member."""
    metadata = json.loads(student.with_suffix(".json").read_text())
    assert metadata["heads"] == 2 and metadata["training"]["teacher"] == str(teacher)
    loaded = load_checkpoint(student)
    files = sorted(synthetic_catalog.parent.glob("images/*.jpeg"))[:64]
    images = model_inputs(files, loaded.preprocessing, workers=0)
    heads = member_logits(loaded.model.eval(), images)
    assert 0.75 < np.median(heads[:, 1] - heads[:, 0]) < 4.5  # from 0 towards 3
    probabilities, spread = Classifier(loaded, backend="torch").probabilities(images)
    assert np.isfinite(spread).all() and (spread > 0).all()


def test_training_goes_on_from_a_student_with_its_heads(student, synthetic_catalog, tmp_path):
    model, _, _, kept = start_model(TrainConfig(labels=synthetic_catalog, output=tmp_path / "more.pt", init_from=str(student)),
                                    ("elliptical", "spiral"))
    assert kept and model.heads == 2
    assert torch.equal(model.output_layer().weight, load_checkpoint(student).model.output_layer().weight)


def test_distillation_loss_is_least_where_the_student_says_what_the_teacher_says():
    teacher = torch.tensor([[[2.0, -1.0, 0.5]], [[0.0, 0.3, -2.0]]])
    assert distillation_loss(teacher, teacher) < distillation_loss(teacher + torch.tensor([1.0, 0.0, 0.0]), teacher)
    one_logit = torch.tensor([[[1.5]], [[-0.5]]])
    assert distillation_loss(one_logit, one_logit) < distillation_loss(one_logit + 1, one_logit)


def test_heads_share_one_trunk_and_their_mean_is_the_output():
    model = create_model("galaxynet", classes=("elliptical", "spiral", "merger"), heads=3).eval()
    images = torch.rand(2, 3, 64, 64)
    logits, features = model.member_outputs(images)
    assert logits.shape == (2, 3, 3) and features.shape == (2, 1, 128)
    assert torch.allclose(model(images), logits.mean(dim=1), atol=1e-6)
    maps = model.class_activation_maps(model.forward_features(images))
    assert torch.allclose(maps.mean(dim=(2, 3)) + model.classifier.bias.view(3, 3).mean(dim=0), model(images), atol=1e-5)


def test_a_teacher_of_other_classes_is_refused(synthetic_catalog, tmp_path):
    with pytest.raises(ModelError, match="classes"):
        train(TrainConfig(labels=synthetic_catalog, output=tmp_path / "student.pt", epochs=1, workers=0, progress=False,
                          use_cache=False, teacher="galaxynet"))


def test_distill_weight_mixes_the_teachers_loss_with_the_labels():
    from galaxymorph.models.ensemble import GalaxyEnsemble
    from galaxymorph.training.train import train_step

    classes = ("elliptical", "spiral", "merger")
    teacher = GalaxyEnsemble([create_model("galaxynet", classes=classes) for _ in range(2)]).eval()
    student = create_model("galaxynet", classes=classes, heads=2)
    images, targets = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 1])
    losses = {}
    for weight in (0.0, 0.5, 1.0):
        config = TrainConfig(labels="labels.csv", output="student.pt", teacher="ensemble", distill_weight=weight, workers=0)
        optimizer = torch.optim.SGD(student.parameters(), lr=0.0)  # measures, changes nothing
        torch.manual_seed(0)  # the same dropout each time
        losses[weight], _ = train_step(student.train(), optimizer, images, targets, masks=None,
                                       weights=torch.ones(3), config=config, teacher=teacher)
    assert losses[0.5] == pytest.approx((losses[0.0] + losses[1.0]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="distill_weight"):
        TrainConfig(labels="labels.csv", output="student.pt", distill_weight=1.5, workers=0)


def test_the_bundled_student_gives_an_uncertainty_without_test_time_augmentation(tmp_path):
    """`galaxynet_distilled`: one network whose three heads stand in for the default ensemble's members."""
    assert load_model("galaxynet_distilled").model.heads == 3
    files = [path for path, _ in write_examples(tmp_path, 4, seed=5, size=128)]
    rows = next(predict(files, "galaxynet_distilled", options=PredictOptions(workers=0)))
    assert all(row["p_spiral_std"] > 0 and row["label"] in ("spiral", "elliptical", "uncertain") for row in rows)
