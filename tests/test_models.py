import json

import numpy as np
import pytest
import torch

from galaxymorph import ModelError
from galaxymorph.labels import BINARY_CLASSES, GZ1_CLASSES
from galaxymorph.models import (
    bundled_models,
    create_model,
    list_architectures,
    load_checkpoint,
    load_model,
    logits_to_probabilities,
    save_checkpoint,
)
from galaxymorph.config import Preprocessing
from galaxymorph.models.summary import layer_summary


def test_seed_is_the_starting_design():
    model = create_model("seed")
    rows = {row.name: row for row in layer_summary(model, 64)}
    assert list(rows) == ["Conv1_Edges", "Pool1", "Conv2_Shapes", "Pool2", "Flatten", "Dense_Decision",
                          "Output_Probability"]
    assert rows["Conv1_Edges"].output_shape == (32, 62, 62)
    assert rows["Pool1"].output_shape == (32, 31, 31)
    assert rows["Conv2_Shapes"].output_shape == (64, 29, 29)
    assert rows["Pool2"].output_shape == (64, 14, 14)
    assert rows["Flatten"].output_shape == (64 * 14 * 14,)
    assert rows["Dense_Decision"].output_shape == (64,)
    assert rows["Output_Probability"].output_shape == (1,)
    assert model.Conv1_Edges.kernel_size == (3, 3) and model.Conv2_Shapes.kernel_size == (3, 3)
    assert sum(p.numel() for p in model.parameters()) == 822_337


def test_seed_outputs_a_spiral_probability_between_0_and_1():
    model = create_model("seed").eval()
    probabilities = logits_to_probabilities(model(torch.rand(5, 3, 64, 64)))
    assert probabilities.shape == (5, 2)
    assert torch.allclose(probabilities.sum(1), torch.ones(5))


@pytest.mark.parametrize("name", ["galaxynet", "galaxynet_wide", "galaxynet_xl"])
def test_galaxynet_features_and_head(name):
    model = create_model(name).eval()
    assert model.classes == GZ1_CLASSES
    images = torch.rand(2, 3, 64, 64)
    features = model.forward_features(images)
    assert features.ndim == 4 and features.shape[0] == 2
    assert model.forward_head(features).shape == (2, len(GZ1_CLASSES))
    assert torch.allclose(model(images), model.forward_head(features))


def test_galaxynet_logits_are_the_means_of_its_class_activation_maps():
    model = create_model("galaxynet").eval()
    images = torch.rand(2, 3, 64, 64)
    maps = model.class_activation_maps(model.forward_features(images))
    assert maps.shape == (2, len(GZ1_CLASSES), 4, 4)
    torch.testing.assert_close(maps.mean(dim=(2, 3)) + model.output_layer().bias, model(images))


def test_two_classes_use_one_sigmoid_output():
    assert create_model("galaxynet", classes=BINARY_CLASSES)(torch.rand(1, 3, 64, 64)).shape == (1, 1)


def test_registry():
    assert {"seed", "galaxynet"} <= set(list_architectures())
    with pytest.raises(ModelError, match="unknown architecture 'resnet9000'"):
        create_model("resnet9000")
    with pytest.raises(ValueError, match="at least two classes"):
        create_model("seed", classes=["spiral"])


def test_checkpoint_round_trip(tmp_path):
    model = create_model("galaxynet", classes=("ring", "no_ring")).eval()
    path = save_checkpoint(model, tmp_path / "rings.pt", architecture="galaxynet",
                           preprocessing=Preprocessing(crop_fraction=0.5), metrics={"accuracy": 0.5})
    description = json.loads(path.with_suffix(".json").read_text())
    assert description["classes"] == ["ring", "no_ring"] and description["preprocessing"]["crop_fraction"] == 0.5
    loaded = load_checkpoint(path)
    images = torch.rand(3, 3, 64, 64)
    assert torch.allclose(loaded.model(images), model(images))
    assert loaded.preprocessing == Preprocessing(crop_fraction=0.5)
    assert load_model(tmp_path / "rings.json").classes == ("ring", "no_ring")


def test_checkpoint_weights_never_execute_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    model = create_model("seed")
    path = save_checkpoint(model, tmp_path / "evil.pt", architecture="seed", preprocessing=Preprocessing())
    torch.save({"state": Payload()}, path)
    with pytest.raises(ModelError, match="evil.pt is not a plain state dict of tensors") as refused:
        load_checkpoint(path)
    assert "weights_only=False" not in str(refused.value)


def test_broken_checkpoints_are_reported(tmp_path):
    with pytest.raises(ModelError, match="no bundled model or checkpoint named 'missing'"):
        load_model("missing")
    model = create_model("seed")
    path = save_checkpoint(model, tmp_path / "m.pt", architecture="galaxynet", preprocessing=Preprocessing())
    with pytest.raises(ModelError, match="do not fit the architecture"):
        load_checkpoint(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="expected m.pt and m.json"):
        load_checkpoint(path)


@pytest.mark.parametrize(("metadata", "message"), [
    ("null", "expected a JSON object, got NoneType"),
    ('{"architecture": "galaxynet", "classes": ["elliptical", "spiral"], "members": 100000}', "'members' must be"),
    ('{"architecture": "galaxynet", "classes": "elliptical"}', "'classes' must be a list"),
    ('{"architecture": "galaxynet", "classes": ["a", "b"], "preprocessing": null}', "'preprocessing' must be"),
    ('{"architecture": "nothing", "classes": ["a", "b"]}', "unknown architecture 'nothing'"),
    ("{not json", "invalid metadata in m.json"),
])
def test_hostile_checkpoint_metadata_is_one_clear_error(tmp_path, metadata, message):
    path = save_checkpoint(create_model("seed"), tmp_path / "m.pt", architecture="seed", preprocessing=Preprocessing())
    path.with_suffix(".json").write_text(metadata)
    with pytest.raises(ModelError, match=message):
        load_checkpoint(path)


def test_bundled_models_are_shipped_and_load():
    assert {"galaxynet", "seed"} <= set(bundled_models())
    default = load_model("galaxynet")
    assert default.metadata["split"]["test"] and default.metadata["metrics"]["validation"]
    seed = load_model("seed")
    assert type(seed.model).__name__ == "SeedCNN" and seed.classes == BINARY_CLASSES
    assert np.isfinite(seed.metadata["metrics"]["validation"]["spiral_roc_auc"])


def test_an_architecture_name_cannot_be_registered_twice():
    from galaxymorph.models.registry import list_architectures, register_model

    def seed():
        """Not the seed CNN."""

    assert "seed" in list_architectures()
    with pytest.raises(ModelError, match="an architecture named 'seed' is already registered"):
        register_model(seed)
    assert type(create_model("seed")).__name__ == "SeedCNN"
