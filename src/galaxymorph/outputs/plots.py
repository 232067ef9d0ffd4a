"""Figures: the contact sheet, the evaluation plots, explanations, feature maps and thumbnails.

Each `*_figure` function draws a matplotlib figure from plain arrays; `save_png` writes one to a
file and `png_bytes` gives it as bytes (for pages that embed it), both closing it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from galaxymorph.config import THUMBNAIL_SIZE


def pyplot():
    """matplotlib.pyplot on the file-only Agg back-end (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(figure, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(figure)
    return buffer.getvalue()


def save_png(figure, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Write the figure as a PNG file; the figure is closed."""
    path = Path(path)
    path.write_bytes(png_bytes(figure, dpi=dpi))
    return path


def thumbnail_jpeg(pixels: np.ndarray) -> bytes:
    """A model input (3, S, S) in [0, 1] as a JPEG of `THUMBNAIL_SIZE` px, as reports and the
    service show galaxies."""
    from PIL import Image

    picture = Image.fromarray((np.clip(pixels.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    picture.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BILINEAR).save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, *, columns: int = 6) -> Path:
    """A grid of (H, W, 3) images with a caption under each, saved as PNG."""
    rows = max(1, -(-len(images) // columns))
    figure, axes = pyplot().subplots(rows, columns, figsize=(2.0 * columns, 2.5 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions):
        axis.imshow(image)
        axis.set_title(caption, fontsize=8)
    figure.tight_layout()
    return save_png(figure, path)


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]]):
    """ROC curves, each (fpr, tpr, auc) under its label."""
    figure, axis = pyplot().subplots(figsize=(4.5, 4.5))
    for label, (fpr, tpr, auc) in curves.items():
        axis.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, spiral vs elliptical")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def reliability_figure(predicted: np.ndarray, observed: np.ndarray, counts: np.ndarray, ece: float):
    """Reliability diagram: observed spiral fraction against mean predicted p_spiral per bin."""
    figure, axis = pyplot().subplots(figsize=(4.5, 4.5))
    filled = counts > 0
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    axis.plot(predicted[filled], observed[filled], marker="o", label=f"model (ECE {ece:.3f})")
    axis.set(xlabel="mean predicted p_spiral", ylabel="observed spiral fraction", xlim=(0, 1), ylim=(0, 1),
             title="Reliability diagram")
    axis.legend(loc="upper left")
    figure.tight_layout()
    return figure


def confusion_figure(matrix: np.ndarray, classes: Sequence[str]):
    """Confusion matrix with counts; true classes in rows."""
    size = 2.5 + 0.7 * len(classes)
    figure, axis = pyplot().subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    figure.tight_layout()
    return figure


def histogram_figure(values: Sequence[float], *, label: str = "p_spiral"):
    """Histogram of probabilities in 20 bins over [0, 1]."""
    figure, axis = pyplot().subplots(figsize=(5, 3))
    axis.hist(values, bins=20, range=(0, 1), color="#4a6fa5")
    axis.set(xlabel=label, ylabel="galaxies")
    figure.tight_layout()
    return figure


def explanation_figure(image: np.ndarray, attribution: np.ndarray, method: str, caption: str):
    """A model input (3, S, S), its overlay and its map (S, S) side by side, under `caption`."""
    picture = np.clip(image.transpose(1, 2, 0), 0, 1)
    figure, axes = pyplot().subplots(1, 3, figsize=(9, 3.3))
    axes[0].imshow(picture)
    axes[0].set_title("input")
    axes[1].imshow(picture)
    axes[1].imshow(attribution, cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    axes[1].set_title(f"{method} overlay")
    axes[2].imshow(attribution, cmap="inferno", vmin=0, vmax=1)
    axes[2].set_title("map")
    for axis in axes:
        axis.axis("off")
    figure.suptitle(caption)
    figure.tight_layout()
    return figure


def save_explanation(image: np.ndarray, attribution: np.ndarray, folder: str | os.PathLike, stem: str, *,
                     method: str, caption: str) -> tuple[Path, Path]:
    """Write `stem.png` (`explanation_figure`) and `stem.npy` (the map)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array_path = folder / f"{stem}.npy"
    np.save(array_path, attribution)
    return save_png(explanation_figure(image, attribution, method, caption), folder / f"{stem}.png"), array_path


def save_feature_maps(maps: dict[str, np.ndarray], folder: str | os.PathLike, stem: str) -> list[Path]:
    """One grid image per layer, `stem-LAYER.png`, each map scaled to its own maximum."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, activations in maps.items():
        columns = int(np.ceil(np.sqrt(len(activations))))
        rows = int(np.ceil(len(activations) / columns))
        figure, axes = pyplot().subplots(rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.4), squeeze=False)
        for axis in axes.ravel():
            axis.axis("off")
        for axis, activation in zip(axes.ravel(), activations):
            axis.imshow(activation, cmap="gray", vmin=0, vmax=max(float(activation.max()), 1e-12))
        figure.suptitle(f"{stem}: {name} ({len(activations)} maps, {activations.shape[1]}x{activations.shape[2]})")
        written.append(save_png(figure, folder / f"{stem}-{name.replace('.', '_')}.png", dpi=80))
    return written
