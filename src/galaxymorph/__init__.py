"""galaxymorph: galaxy morphology from survey images.

The data path is one way: sources -> preprocessing -> model -> outputs.

>>> from galaxymorph import classify
>>> classify(["cutouts/"], "morphology.csv")          # doctest: +SKIP
"""

from galaxymorph.config import Preprocessing
from galaxymorph.errors import CatalogError, GalaxyMorphError, ImageReadError, ModelError

__all__ = [
    "CatalogError",
    "GalaxyMorphError",
    "ImageReadError",
    "ModelError",
    "Preprocessing",
    "classify",
    "evaluate",
    "fetch_catalog",
    "load_image",
    "load_model",
    "predict",
    "run_demo",
    "train",
    "write_report",
]


def __getattr__(name: str):
    # Heavy libraries (torch, onnxruntime, matplotlib) load only when the API that needs them is used.
    if name in ("classify", "predict"):
        from galaxymorph import prediction as module
    elif name == "evaluate":
        from galaxymorph import evaluation as module
    elif name == "fetch_catalog":
        from galaxymorph import remote as module
    elif name == "load_image":
        from galaxymorph import preprocess as module
    elif name == "load_model":
        from galaxymorph import models as module
    elif name == "run_demo":
        from galaxymorph import demo as module
    elif name == "train":
        from galaxymorph import training as module
    elif name == "write_report":
        from galaxymorph.outputs import report as module
    else:
        raise AttributeError(f"module 'galaxymorph' has no attribute {name!r}")
    return getattr(module, name)
