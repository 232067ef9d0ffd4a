"""galaxymorph: galaxy morphology from survey images.

The data path is one way: sources -> preprocessing -> model -> outputs (docs/architecture.md).
These names are the public API, and all that the `galaxymorph` command uses.

>>> from galaxymorph import classify
>>> classify(["cutouts/"], "morphology.csv")          # doctest: +SKIP
"""

from importlib import import_module

from galaxymorph.config import (BATCH_SIZE, CALIBRATION_IMAGES, CHUNK_ROWS, DEFAULT_MODEL, MAX_PIXELS, SPLIT_SEED,
                                Preprocessing)
from galaxymorph.errors import CatalogError, GalaxyMorphError, ImageReadError, ModelError

_LAZY = {
    # Heavy libraries (torch, onnxruntime, httpx, matplotlib) load only when a name that needs them is used.
    "galaxymorph.prediction": ("Classifier", "PredictOptions", "classify", "embed", "predict"),
    "galaxymorph.similarity": ("EmbeddingIndex", "oddities", "similar"),
    "galaxymorph.outputs": ("CatalogWriter",),
    "galaxymorph.evaluation": ("evaluate",),
    "galaxymorph.explain": ("explain_inputs",),
    "galaxymorph.report": ("write_report",),
    "galaxymorph.preprocess": ("load_image",),
    "galaxymorph.preprocess.augment": ("SurveyAugmentation",),
    "galaxymorph.sources": ("count_inputs",),
    "galaxymorph.models": ("bundled_models", "export_onnx", "list_architectures", "load_model"),
    "galaxymorph.models.summary": ("describe_model",),
    "galaxymorph.training": ("PretrainConfig", "TrainConfig", "combine_checkpoints", "pretrain", "train"),
    "galaxymorph.training.calibration": ("calibrate",),
    "galaxymorph.quantization": ("quantize_checkpoint",),
    "galaxymorph.remote": ("DEFAULT_SURVEY", "CutoutCache", "CutoutService", "CutoutSettings", "Cutouts", "FetchOptions",
                           "fetch_catalog", "iter_fetched_rows"),
    "galaxymorph.remote.local_server": ("LocalCutoutServer",),
    "galaxymorph.scale": ("WORKER_OPTIONS", "classify_on_cluster"),
    "galaxymorph.service": ("ServiceSettings", "serve"),
    "galaxymorph.demo": ("run_demo",),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "BATCH_SIZE", "CALIBRATION_IMAGES", "CHUNK_ROWS", "CatalogError", "CatalogWriter", "Classifier",
    "CutoutCache", "CutoutService", "CutoutSettings", "Cutouts", "DEFAULT_MODEL", "DEFAULT_SURVEY",
    "EmbeddingIndex", "FetchOptions", "GalaxyMorphError", "ImageReadError", "LocalCutoutServer", "MAX_PIXELS",
    "ModelError", "PredictOptions", "PretrainConfig", "Preprocessing", "SPLIT_SEED", "ServiceSettings", "SurveyAugmentation",
    "TrainConfig", "WORKER_OPTIONS", "bundled_models", "calibrate", "classify", "classify_on_cluster",
    "combine_checkpoints", "count_inputs", "describe_model", "embed", "evaluate", "explain_inputs",
    "export_onnx", "fetch_catalog", "iter_fetched_rows", "list_architectures", "load_image", "load_model",
    "oddities", "predict", "pretrain", "quantize_checkpoint", "run_demo", "serve", "similar", "train", "write_report",
]


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'galaxymorph' has no attribute {name!r}")
    return getattr(import_module(_MODULE_OF[name]), name)
