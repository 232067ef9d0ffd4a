"""Model architectures, the registry and checkpoints.

Importing the family modules here runs their `@register_model` decorators, so the registry itself
imports no family."""

from galaxymorph.models._base import GalaxyClassifier, logits_to_probabilities
from galaxymorph.models.checkpoint import (
    LoadedModel,
    build_model,
    bundled_models,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from galaxymorph.models.ensemble import GalaxyEnsemble
from galaxymorph.models.export import export_onnx
from galaxymorph.models.registry import create_model, list_architectures, register_model
from galaxymorph.models import galaxynet, seed  # noqa: F401  (registers the families)

__all__ = [
    "GalaxyClassifier",
    "GalaxyEnsemble",
    "LoadedModel",
    "build_model",
    "bundled_models",
    "create_model",
    "export_onnx",
    "list_architectures",
    "load_checkpoint",
    "load_model",
    "logits_to_probabilities",
    "register_model",
    "save_checkpoint",
]
