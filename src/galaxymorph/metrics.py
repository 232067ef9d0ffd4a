"""Classification metrics in plain numpy: accuracy, ROC, calibration, confusion."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def roc_curve(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds, from (0, 0) to (1, 1)."""
    order = np.argsort(-scores, kind="mergesort")
    scores, positives = scores[order], positives[order].astype(bool)
    distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(positives)[distinct]
    false_positives = (distinct + 1) - true_positives
    tpr = np.r_[0.0, true_positives / max(positives.sum(), 1)]
    fpr = np.r_[0.0, false_positives / max((~positives).sum(), 1)]
    return fpr, tpr


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    positives = np.asarray(positives, dtype=bool)
    if positives.all() or not positives.any():
        return float("nan")
    fpr, tpr = roc_curve(np.asarray(scores, dtype=np.float64), positives)
    return float(np.trapezoid(tpr, fpr))


def calibration_bins(probabilities: np.ndarray, positives: np.ndarray, n_bins: int = 15):
    """Per equal-width bin: mean predicted probability, observed frequency and count."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1]), 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    predicted = np.bincount(index, weights=probabilities, minlength=n_bins)
    observed = np.bincount(index, weights=positives.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return predicted / counts, observed / counts, counts


def expected_calibration_error(probabilities: np.ndarray, positives: np.ndarray, n_bins: int = 15) -> float:
    """Count-weighted mean |observed frequency - mean probability| over equal-width bins."""
    predicted, observed, counts = calibration_bins(np.asarray(probabilities, np.float64), np.asarray(positives), n_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(observed[filled] - predicted[filled])) / max(counts.sum(), 1))


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts with true classes in rows and predicted classes in columns."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def per_class_precision_recall(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall and support of each class from a confusion matrix."""
    result = {}
    for i, name in enumerate(classes):
        predicted, actual = matrix[:, i].sum(), matrix[i, :].sum()
        result[name] = {
            "precision": float(matrix[i, i] / predicted) if predicted else float("nan"),
            "recall": float(matrix[i, i] / actual) if actual else float("nan"),
            "support": int(actual),
        }
    return result


def binary_summary(p_positive: np.ndarray, positives: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, ROC AUC, expected calibration error and log loss of a binary probability."""
    p_positive, positives = np.asarray(p_positive, np.float64), np.asarray(positives, bool)
    return {
        "n": int(len(positives)),
        "accuracy": float(np.mean((p_positive >= threshold) == positives)) if len(positives) else float("nan"),
        "roc_auc": roc_auc(p_positive, positives),
        "ece": expected_calibration_error(p_positive, positives),
        "log_loss": log_loss(p_positive, positives) if len(positives) else float("nan"),
    }


def log_loss(p_positive: np.ndarray, positives: np.ndarray) -> float:
    """Mean negative log-likelihood of a binary probability: a proper score, lower when ranking and
    calibration are better together (probabilities clipped to [1e-12, 1 - 1e-12])."""
    p_positive = np.clip(np.asarray(p_positive, np.float64), 1e-12, 1 - 1e-12)
    return float(-np.mean(np.where(np.asarray(positives, bool), np.log(p_positive), np.log1p(-p_positive))))


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Score interval of a proportion (Wilson 1927), 95% with the default `z`: how far an accuracy
    measured on `trials` galaxies may lie from the model's accuracy on galaxies like them."""
    if trials == 0:
        return (float("nan"), float("nan"))
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half_width = z / (1 + z * z / trials) * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return (centre - half_width, centre + half_width)


def mcnemar_p_value(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar test of two classifiers on the same galaxies, from the counts that
    only the first and only the second gets right: the chance of a split at least this uneven if
    both were equally accurate."""
    discordant = only_first + only_second
    tail = sum(math.comb(discordant, k) for k in range(min(only_first, only_second) + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)
