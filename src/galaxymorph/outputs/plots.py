"""Figures: the contact sheet of classified galaxies and the evaluation plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the file-only Agg back-end (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, *, columns: int = 6) -> Path:
    """A grid of (H, W, 3) images with a caption under each, saved as PNG."""
    plt = pyplot()
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.5 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions):
        axis.imshow(image)
        axis.set_title(caption, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path) -> Path:
    """ROC curves, each (fpr, tpr, auc) under its label."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    for label, (fpr, tpr, auc) in curves.items():
        axis.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, spiral vs elliptical")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def reliability_plot(predicted: np.ndarray, observed: np.ndarray, counts: np.ndarray, ece: float,
                     path: str | Path) -> Path:
    """Reliability diagram: observed spiral fraction against mean predicted p_spiral per bin."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    filled = counts > 0
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    axis.plot(predicted[filled], observed[filled], marker="o", label=f"model (ECE {ece:.3f})")
    axis.set(xlabel="mean predicted p_spiral", ylabel="observed spiral fraction", xlim=(0, 1), ylim=(0, 1),
             title="Reliability diagram")
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def confusion_plot(matrix: np.ndarray, classes: Sequence[str], path: str | Path) -> Path:
    """Confusion matrix with counts; true classes in rows."""
    plt = pyplot()
    size = 2.5 + 0.7 * len(classes)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
