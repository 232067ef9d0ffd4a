"""Temperature scaling (Guo et al. 2017, ICML): make p_spiral honest on the validation split.

One number T divides the logits, which changes how sure the model is without changing what it
ranks first. T is fitted on the validation split's p_spiral (the quantity astronomers use) and
stored in the checkpoint's metadata, where prediction picks it up, with the share of spirals it was
fitted on (which `confident` needs, to hold also for samples with other class mixes). The same step fits the feature
density behind `ood_score` on training images and sets its limit on the validation split.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np

from galaxymorph.catalog import CatalogRow, LabelledCatalog, read_labelled_catalog
from galaxymorph.config import BATCH_SIZE
from galaxymorph.errors import CatalogError, ModelError
from galaxymorph.labels import BINARY_CLASSES, binary_label, has_spiral_semantics, spiral_probability
from galaxymorph.metrics import expected_calibration_error, log_loss
from galaxymorph.models import LoadedModel, load_checkpoint
from galaxymorph.models.checkpoint import record_in_metadata
from galaxymorph.prediction import Classifier, PredictOptions, predict
from galaxymorph.training.data import rows_of_split, split_inputs
from galaxymorph.typicality import FeatureDensity

DENSITY_IMAGES = 2000
"""Training galaxies whose features the density behind `ood_score` is fitted to."""
TYPICAL_SHARE = 0.95
"""Share of the validation galaxies whose `ood_score` is within the limit (the rest are not `confident`)."""


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
    """Fit the temperature of a checkpoint on a split of its labelled catalog, and the feature
    density behind `ood_score` (`fit_feature_density`), and save both in its metadata; nothing is
    saved when either cannot be fitted."""
    loaded = load_checkpoint(checkpoint)
    loaded.require_trained_head()
    if not has_spiral_semantics(loaded.classes):
        raise ModelError(f"model {loaded.name} has no spiral/elliptical classes to calibrate p_spiral on")
    loaded.metadata.pop("calibration", None)  # fit on the uncalibrated model
    full_catalog = read_labelled_catalog(labels)
    catalog = full_catalog.subset(rows_of_split(full_catalog.ids, loaded, split, labels))
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
        "temperature": temperature, "split": split, "galaxies": int(len(is_spiral)), "spiral_share": float(is_spiral.mean()),
        "nll_before": spiral_nll(probabilities, is_spiral, loaded.classes, 1.0),
        "nll_after": spiral_nll(probabilities, is_spiral, loaded.classes, temperature),
        "ece_before": expected_calibration_error(spiral_probability(probabilities, loaded.classes), is_spiral),
        "ece_after": expected_calibration_error(calibrated, is_spiral),
    }
    typicality = fit_feature_density(loaded, full_catalog, labels, split=split,
                                     workers=options.workers if options is not None else 0)
    record_in_metadata(checkpoint, "calibration", result)
    record_in_metadata(checkpoint, "typicality", typicality)
    return {**result, "typicality": {key: value for key, value in typicality.items() if key not in ("mean", "whitening")}}


def fit_feature_density(loaded: LoadedModel, catalog: LabelledCatalog, labels: str | os.PathLike, *, split: str = "val",
                        images: int = DENSITY_IMAGES, typical_share: float = TYPICAL_SHARE, workers: int = 0) -> dict:
    """The feature density (`typicality.FeatureDensity`) of a model, fitted to the first `images`
    galaxies of its training split, with the limit of `ood_score` at the `typical_share` quantile
    of the scores of `split`, as the metadata's `typicality` holds it."""
    classifier = Classifier(loaded, backend="torch")

    def features(split_name: str, limit: int | None = None) -> np.ndarray:
        inputs = split_inputs(catalog, loaded, split_name, labels, limit=limit, workers=workers)
        return np.concatenate([classifier.member_outputs(inputs[start:start + BATCH_SIZE])[1]
                               for start in range(0, len(inputs), BATCH_SIZE)])

    training = features("train", images)
    if len(training) <= training.shape[2]:
        raise CatalogError(f"catalog {labels}: {len(training)} readable galaxies in model {loaded.name}'s training split, "
                           f"too few to fit the density of its {training.shape[2]} features (more are needed)")
    density = FeatureDensity.fit(training)
    scores = density.score(features(split))
    density = replace(density, limit=float(np.quantile(scores, typical_share)))
    return {**density.to_dict(), "images": len(training), "limit_split": split, "typical_share": typical_share,
            "median_score": float(np.median(scores))}
