"""Layer-by-layer summary of a model: name, output shape, parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from galaxymorph.config import CHANNELS
from galaxymorph.models._base import GalaxyClassifier


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
