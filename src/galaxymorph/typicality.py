"""How typical an input is of the images a model was trained on: the `ood_score` column.

Each member's features (its last block's activations averaged over positions) are modelled, on
training images, by one Gaussian; an input's score is its Mahalanobis distance from it, as a root
mean square over the feature dimensions and the members, so that typical training images score
about 1. A distance in feature space picks out inputs rendered unlike the training images (zoomed,
upsampled, other colour stretches, noise) far better than the class probabilities do, which can be
confidently wrong on such inputs (MODEL_CARD.md, "Uncertainty"; Lee et al. 2018, NeurIPS).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

COVARIANCE_FLOOR = 1e-6
"""Added to the covariance's diagonal, relative to its mean variance: features that never vary
(dead channels) would make it singular."""


@dataclass(frozen=True)
class FeatureDensity:
    """One Gaussian per ensemble member over its features: means (M, D) and whitening matrices
    (M, D, D), with W W^T the inverse covariance; `limit` is the score above which an input counts
    as unlike the training images (chosen on the validation split; None: not chosen)."""

    mean: np.ndarray
    whitening: np.ndarray
    limit: float | None = None

    @classmethod
    def fit(cls, features: np.ndarray) -> FeatureDensity:
        """Fit to features (N, M, D) of training images."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 3 or len(features) <= features.shape[2]:
            raise ValueError(f"need features (N, M, D) with N > D to fit a density, got shape {features.shape}")
        mean = features.mean(axis=0)
        whitening = []
        for member in range(features.shape[1]):
            centred = features[:, member] - mean[member]
            covariance = centred.T @ centred / len(centred)
            covariance += COVARIANCE_FLOOR * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
            values, vectors = np.linalg.eigh(covariance)
            whitening.append(vectors / np.sqrt(values))
        return cls(mean, np.stack(whitening))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores (N,) of features (N, M, D): about 1 for typical training images, larger when less typical."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        whitened = np.einsum("nmd,mde->nme", centred, self.whitening)
        return np.sqrt(np.mean(whitened ** 2, axis=(1, 2)))

    def to_dict(self) -> dict:
        return {"members": self.mean.shape[0], "dimensions": self.mean.shape[1], "limit": self.limit,
                "mean": _encode(self.mean), "whitening": _encode(self.whitening)}

    @classmethod
    def from_dict(cls, values: dict) -> FeatureDensity:
        members, dimensions = int(values["members"]), int(values["dimensions"])
        return cls(_decode(values["mean"], (members, dimensions)),
                   _decode(values["whitening"], (members, dimensions, dimensions)), values.get("limit"))


def _encode(array: np.ndarray) -> str:
    """float32 little-endian bytes, base64: a compact, exact form for JSON metadata."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: str, shape: tuple[int, ...]) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(text), dtype="<f4")
    if values.size != int(np.prod(shape)):
        raise ValueError(f"feature density of {values.size} values does not have the shape {shape}")
    return values.reshape(shape).astype(np.float64)
