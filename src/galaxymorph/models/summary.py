"""What a model is: its layers (name, output shape, parameters) and what it says of an example galaxy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from galaxymorph.config import CHANNELS, Preprocessing
from galaxymorph.models._base import GalaxyClassifier, logits_to_probabilities
from galaxymorph.models.checkpoint import bundled_models, load_model
from galaxymorph.models.registry import create_model
from galaxymorph.preprocess.decode import decode_array
from galaxymorph.sources.synthetic import synthetic_galaxy


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int


def layer_summary(model: GalaxyClassifier, image_size: int) -> list[LayerRow]:
    """Run one image through the model and record every leaf layer's output shape and parameters."""
    rows: list[LayerRow] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            def record(module, _inputs, output, name=name):
                rows.append(LayerRow(name, type(module).__name__, tuple(output.shape[1:]),
                                     sum(p.numel() for p in module.parameters())))
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, CHANNELS, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    return rows


@dataclass(frozen=True)
class ModelDescription:
    """A model's layers and its class probabilities for a generated example spiral."""

    name: str
    origin: str
    """"pretrained" (a bundled model or checkpoint) or "untrained" (an architecture)."""
    kind: str
    image_size: int
    classes: tuple[str, ...]
    layers: list[LayerRow]
    parameters: int
    example_probabilities: dict[str, float]


def describe_model(name: str, *, seed: int = 0) -> ModelDescription:
    """Describe an architecture, bundled model or checkpoint; the example spiral is generated with `seed`."""
    if name in bundled_models() or Path(name).with_suffix(".pt").is_file():
        loaded = load_model(name)
        model, preprocessing, origin = loaded.model, loaded.preprocessing, "pretrained"
    else:
        model, preprocessing, origin = create_model(name), Preprocessing(), "untrained"
    size = preprocessing.image_size
    galaxy = synthetic_galaxy("spiral", np.random.default_rng(seed))
    image = torch.from_numpy(decode_array(galaxy, "example", preprocessing).pixels[None])
    with torch.no_grad():
        probabilities = logits_to_probabilities(model.eval()(image))[0]
    return ModelDescription(name, origin, type(model).__name__, size, tuple(model.classes), layer_summary(model, size),
                            sum(p.numel() for p in model.parameters()), dict(zip(model.classes, probabilities.tolist())))
