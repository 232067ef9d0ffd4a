"""Class vocabularies and how they map onto spiral-vs-elliptical.

`p_spiral` keeps the starting design's meaning: the probability that a galaxy is a disk (spiral,
edge-on disk) rather than an elliptical. Models with finer classes derive it from their class
probabilities, conditioned on the galaxy being one or the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BINARY_CLASSES = ("elliptical", "spiral")
GZ1_CLASSES = (
    "elliptical",
    "spiral_clockwise",
    "spiral_anticlockwise",
    "edge_on_disk",
    "merger",
    "dont_know",
)
ELLIPTICAL_CLASSES = frozenset({"elliptical"})
DISK_CLASSES = frozenset({"spiral", "spiral_clockwise", "spiral_anticlockwise", "edge_on_disk"})
MIRROR_PAIRS = (("spiral_clockwise", "spiral_anticlockwise"),)
"""Labels that a mirror flip exchanges: the winding direction of spiral arms."""


def binary_label(label: str) -> str | None:
    """'elliptical' or 'spiral' for a label of either kind, None for neither (merger, unknown)."""
    if label in ELLIPTICAL_CLASSES:
        return "elliptical"
    if label in DISK_CLASSES:
        return "spiral"
    return None


def mirror_permutation(classes: Sequence[str]) -> np.ndarray:
    """Index map that turns a class index into its mirror image's class index."""
    permutation = np.arange(len(classes))
    for left, right in MIRROR_PAIRS:
        if left in classes and right in classes:
            i, j = classes.index(left), classes.index(right)
            permutation[i], permutation[j] = j, i
    return permutation


def has_spiral_semantics(classes: Sequence[str]) -> bool:
    """True when the classes include ellipticals and disks, so that p_spiral is defined."""
    return bool(ELLIPTICAL_CLASSES & set(classes)) and bool(DISK_CLASSES & set(classes))


def galaxy_probability(probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """p_galaxy from class probabilities (..., K): P(disk) + P(elliptical), the mass behind p_spiral
    (1 for models that know no other classes)."""
    return probabilities[..., [i for i, c in enumerate(classes) if c in DISK_CLASSES | ELLIPTICAL_CLASSES]].sum(axis=-1)


def calibrated_spiral_share(metadata: dict) -> float | None:
    """The share of spirals that a model's p_spiral was calibrated to (`calibrate` records it); None
    where it was not recorded, or is 0 or 1 (no even mix to compare with)."""
    share = metadata.get("calibration", {}).get("spiral_share")
    return share if share is not None and 0.0 < share < 1.0 else None


def with_even_classes(p_spiral: np.ndarray, spiral_share: float) -> np.ndarray:
    """p_spiral calibrated on a sample whose share of spirals is `spiral_share`, as it would be for a
    sample with as many spirals as ellipticals (Bayes' rule with the prior changed to one half)."""
    spiral = p_spiral * (1.0 - spiral_share)
    return spiral / (spiral + (1.0 - p_spiral) * spiral_share)


def spiral_probability(probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """p_spiral from class probabilities (..., K): P(disk) / (P(disk) + P(elliptical)); 0.5 where
    both are 0, NaN where the probabilities are (an image that could not be classified)."""
    disk = probabilities[..., [i for i, c in enumerate(classes) if c in DISK_CLASSES]].sum(axis=-1)
    elliptical = probabilities[..., [i for i, c in enumerate(classes) if c in ELLIPTICAL_CLASSES]].sum(axis=-1)
    total = disk + elliptical
    undefined = np.where(np.isnan(total), np.nan, 0.5).astype(disk.dtype)
    return np.divide(disk, total, out=undefined, where=total > 0)
