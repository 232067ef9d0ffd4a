"""Temperature scaling (Guo et al. 2017, ICML): make p_spiral honest on the validation split.

One number T divides the logits, which changes how sure the model is without changing what it
ranks first. T is fitted on the validation split's p_spiral (the quantity astronomers use) and
stored in the checkpoint's metadata, where prediction picks it up.
"""

from __future__ import annotations

import math
import os

import numpy as np

from galaxymorph.catalog import CatalogRow, read_labelled_catalog
from galaxymorph.errors import CatalogError, ModelError
from galaxymorph.labels import BINARY_CLASSES, binary_label, has_spiral_semantics, spiral_probability
from galaxymorph.metrics import expected_calibration_error, log_loss
from galaxymorph.models import load_checkpoint
from galaxymorph.models.checkpoint import record_in_metadata


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from softmax(logits): probabilities to the power 1/T, renormalised."""
    powered = np.power(np.clip(probabilities, 1e-300, 1.0), 1.0 / temperature)
    return powered / powered.sum(axis=1, keepdims=True)


def spiral_nll(probabilities: np.ndarray, is_spiral: np.ndarray, classes: tuple[str, ...], temperature: float) -> float:
    return log_loss(spiral_probability(temper(probabilities, temperature), classes), is_spiral)


def fit_temperature(probabilities: np.ndarray, is_spiral: np.ndarray, classes: tuple[str, ...]) -> float:
    """The T in [0.1, 10] that minimises the binary negative log-likelihood of p_spiral (golden section)."""
    low, high = math.log(0.1), math.log(10.0)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if spiral_nll(probabilities, is_spiral, classes, math.exp(left)) < spiral_nll(probabilities, is_spiral, classes, math.exp(right)):
            high = right
        else:
            low = left
    return math.exp((low + high) / 2)


def calibrate(checkpoint: str | os.PathLike, labels: str | os.PathLike, *, split: str = "val", options=None) -> dict:
    """Fit the temperature of a checkpoint on a split of its labelled catalog and save it in its metadata."""
    from galaxymorph.evaluation import rows_of_split
    from galaxymorph.prediction import PredictOptions, predict

    loaded = load_checkpoint(checkpoint)
    if not has_spiral_semantics(loaded.classes):
        raise ModelError(f"model {loaded.name} has no spiral/elliptical classes to calibrate p_spiral on")
    loaded.metadata.pop("calibration", None)  # fit on the uncalibrated model
    catalog = read_labelled_catalog(labels)
    catalog = catalog.subset(rows_of_split(catalog.ids, loaded, split, labels))
    rows = [CatalogRow(i, f) for i, f, label in zip(catalog.ids, catalog.files, catalog.labels) if binary_label(label)]
    if not rows:
        raise CatalogError(f"catalog {labels}: no spiral or elliptical galaxies in model {loaded.name}'s {split!r} split")
    truth = dict(zip(catalog.ids, catalog.labels))
    predicted = [row for batch in predict(rows, loaded, options=options or PredictOptions()) for row in batch if not row["error"]]
    probabilities = np.array([[row[f"p_{c}"] for c in loaded.classes] if loaded.classes != BINARY_CLASSES
                              else [1 - row["p_spiral"], row["p_spiral"]] for row in predicted])
    is_spiral = np.array([binary_label(truth[row["id"]]) == "spiral" for row in predicted])
    temperature = fit_temperature(probabilities, is_spiral, loaded.classes)
    calibrated = spiral_probability(temper(probabilities, temperature), loaded.classes)
    result = {
        "temperature": temperature, "split": split, "galaxies": int(len(is_spiral)),
        "nll_before": spiral_nll(probabilities, is_spiral, loaded.classes, 1.0),
        "nll_after": spiral_nll(probabilities, is_spiral, loaded.classes, temperature),
        "ece_before": expected_calibration_error(spiral_probability(probabilities, loaded.classes), is_spiral),
        "ece_after": expected_calibration_error(calibrated, is_spiral),
    }
    record_in_metadata(checkpoint, "calibration", result)
    return result
