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
    "galaxymorph.prediction": ("Classifier", "PredictOptions", "classify", "predict"),
    "galaxymorph.evaluation": ("evaluate",),
    "galaxymorph.explain": ("explain_inputs",),
    "galaxymorph.report": ("write_report",),
    "galaxymorph.preprocess": ("load_image",),
    "galaxymorph.preprocess.augment": ("SurveyAugmentation",),
    "galaxymorph.sources": ("count_inputs", "iter_inputs"),
    "galaxymorph.models": ("bundled_models", "export_onnx", "list_architectures", "load_model"),
    "galaxymorph.models.summary": ("describe_model",),
    "galaxymorph.training": ("TrainConfig", "combine_checkpoints", "train"),
    "galaxymorph.training.calibration": ("calibrate",),
    "galaxymorph.quantization": ("quantize_checkpoint",),
    "galaxymorph.remote": ("CutoutCache", "CutoutService", "CutoutSettings", "Cutouts", "FetchOptions",
                           "fetch_catalog", "iter_fetched_rows"),
    "galaxymorph.remote.local_server": ("LocalCutoutServer",),
    "galaxymorph.scale": ("WORKER_OPTIONS", "classify_on_cluster"),
    "galaxymorph.service": ("ServiceSettings", "serve"),
    "galaxymorph.demo": ("run_demo",),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted(["BATCH_SIZE", "CALIBRATION_IMAGES", "CHUNK_ROWS", "DEFAULT_MODEL", "MAX_PIXELS", "SPLIT_SEED",
                  "CatalogError", "GalaxyMorphError", "ImageReadError", "ModelError", "Preprocessing", *_MODULE_OF])


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'galaxymorph' has no attribute {name!r}")
    return getattr(import_module(_MODULE_OF[name]), name)
