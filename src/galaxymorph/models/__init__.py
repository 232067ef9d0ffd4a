"""Model architectures, the registry and checkpoints."""

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
from galaxymorph.models.registry import create_model, list_architectures, register_model

__all__ = [
    "GalaxyClassifier",
    "GalaxyEnsemble",
    "LoadedModel",
    "build_model",
    "bundled_models",
    "create_model",
    "list_architectures",
    "load_checkpoint",
    "load_model",
    "logits_to_probabilities",
    "register_model",
    "save_checkpoint",
]
