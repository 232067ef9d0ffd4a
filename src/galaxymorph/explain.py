"""Why the model decided: class-activation maps, gradient saliency and feature maps.

Grad-CAM (Selvaraju et al. 2017) weighs the last convolutional block's activations by the gradient
of the explained class and keeps the positive part, upsampled to the input; SmoothGrad (Smilkov et
al. 2017) averages input gradients over noisy copies; integrated gradients (Sundararajan et al.
2017) integrate them along the path from an empty (black) sky to the image. captum computes all
three. Maps are (S, S), non-negative, scaled so that their maximum is 1.

    >>> explanation = explain("galaxynet", "NGC1300.jpeg")            # doctest: +SKIP
    >>> explanation.attribution.shape, explanation.target             # doctest: +SKIP
    ((64, 64), 'spiral_anticlockwise')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from galaxymorph.labels import has_spiral_semantics, spiral_probability
from galaxymorph.models import LoadedModel, load_model
from galaxymorph.outputs import plots
from galaxymorph.preprocess.decode import read_model_input

METHODS = ("gradcam", "smoothgrad", "integrated_gradients")
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_NOISE = 16, 0.1
INTEGRATION_STEPS = 32


@dataclass(frozen=True)
class Explanation:
    """An explained image: the model input (3, S, S), the map (S, S), the class it explains and the
    model's probabilities."""

    image: np.ndarray
    attribution: np.ndarray
    method: str
    target: str
    probabilities: dict[str, float]
    p_spiral: float


class ClassLogits(nn.Module):
    """One logit per class, also for single-logit (sigmoid) models: z becomes (-z/2, z/2), whose
    softmax is (1 - sigmoid(z), sigmoid(z)), so every class has a gradient to explain."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        return torch.cat([-logits / 2, logits / 2], dim=1) if logits.shape[1] == 1 else logits


def attributions(loaded: LoadedModel, images: np.ndarray, method: str = "gradcam",
                 targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maps (N, S, S) for model inputs (N, 3, S, S), and the class indices they explain (by
    default each image's most probable class)."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model = ClassLogits(loaded.model.eval())
    inputs = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if targets is None:
        with torch.no_grad():
            targets = model(inputs).argmax(dim=1).numpy()
    target = torch.as_tensor(targets)
    if method == "gradcam":
        # An ensemble's logit is its members' mean: its map sums the members' (each weighted by
        # the ensemble's gradient) before the positive part is kept.
        cams = sum(LayerGradCam(model, block).attribute(inputs, target=target) for block in loaded.model.last_conv_blocks())
        maps = LayerAttribution.interpolate(cams.clamp(min=0), tuple(inputs.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    elif method == "smoothgrad":
        tunnel = NoiseTunnel(Saliency(model))
        maps = tunnel.attribute(inputs, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES,
                                stdevs=SMOOTHGRAD_NOISE, target=target).abs().sum(dim=1)
    else:
        integrated = IntegratedGradients(model)
        maps = integrated.attribute(inputs, baselines=torch.zeros_like(inputs), target=target,
                                    n_steps=INTEGRATION_STEPS).abs().sum(dim=1)
    maps = maps.detach().clamp(min=0).numpy()
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peaks > 0, peaks, 1.0)[:, None, None], np.asarray(targets)


def explain(model: str | os.PathLike | LoadedModel, image: str | os.PathLike | np.ndarray, *,
            method: str = "gradcam", target: str | None = None) -> Explanation:
    """Explain one image (a file, or a model input (3, S, S) in [0, 1]) for `target`, a class name
    (default: the predicted class)."""
    from galaxymorph.prediction import Classifier

    loaded = load_model(model)
    pixels = _model_input(loaded, image)
    targets = None if target is None else np.array([_class_index(loaded, target)])
    maps, explained = attributions(loaded, pixels[None], method, targets)
    probabilities, _ = Classifier(loaded, backend="torch").probabilities(pixels[None].astype(np.float32))
    p_spiral = float(spiral_probability(probabilities, loaded.classes)[0]) if has_spiral_semantics(loaded.classes) else float("nan")
    return Explanation(pixels, maps[0], method, loaded.classes[int(explained[0])],
                       dict(zip(loaded.classes, probabilities[0].tolist())), p_spiral)


def feature_maps(model: str | os.PathLike | LoadedModel, image: str | os.PathLike | np.ndarray) -> dict[str, np.ndarray]:
    """What each convolutional layer responds to: its rectified output (C, H, W) for one image,
    by layer name (for `seed`: `Conv1_Edges`, 32 maps, and `Conv2_Shapes`, 64 maps)."""
    loaded = load_model(model)
    pixels = _model_input(loaded, image)
    maps: dict[str, np.ndarray] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, output, name=name: maps.__setitem__(name, output))
             for name, module in loaded.model.named_modules() if isinstance(module, nn.Conv2d)]
    try:
        with torch.no_grad():
            loaded.model.eval()(torch.from_numpy(pixels[None].astype(np.float32)))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.relu(output[0]).numpy() for name, output in maps.items()}


def share_inside(attribution: np.ndarray, segment: np.ndarray) -> float:
    """The share of a map's total that falls inside a segmentation mask (a sanity check: it should
    be well above the share of the image the mask covers)."""
    return float(attribution[segment].sum() / max(float(attribution.sum()), 1e-12))


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation of two maps; 0 when either is constant (it ranks nothing)."""
    from scipy.stats import spearmanr

    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return 0.0
    return float(spearmanr(first.ravel(), second.ravel())[0])


def _model_input(loaded: LoadedModel, image: str | os.PathLike | np.ndarray) -> np.ndarray:
    """A model input (3, S, S) as it is, or read from a file with the model's preprocessing."""
    return image if isinstance(image, np.ndarray) else read_model_input(image, loaded.preprocessing).pixels


def _class_index(loaded: LoadedModel, name: str) -> int:
    if name not in loaded.classes:
        raise ValueError(f"target must be one of the model's classes {loaded.classes}, got {name!r}")
    return loaded.classes.index(name)


def save_explanation(explanation: Explanation, folder: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    """Write `stem.png` (input, overlay, map, with the probability) and `stem.npy` (the map)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array_path, image_path = folder / f"{stem}.npy", folder / f"{stem}.png"
    np.save(array_path, explanation.attribution)
    image_path.write_bytes(render_explanation(explanation, stem))
    return image_path, array_path


def render_explanation(explanation: Explanation, title: str) -> bytes:
    """The explanation as a PNG: input, overlay and map side by side, titled with the probability."""
    import io

    plt = plots.pyplot()
    picture = np.clip(explanation.image.transpose(1, 2, 0), 0, 1)
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    axes[0].imshow(picture)
    axes[0].set_title("input")
    axes[1].imshow(picture)
    axes[1].imshow(explanation.attribution, cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    axes[1].set_title(f"{explanation.method} overlay")
    axes[2].imshow(explanation.attribution, cmap="inferno", vmin=0, vmax=1)
    axes[2].set_title("map")
    for axis in axes:
        axis.axis("off")
    probability = explanation.probabilities[explanation.target]
    summary = f"{title}: {explanation.target} {probability:.1%}"
    if not np.isnan(explanation.p_spiral):
        summary += f", p_spiral {explanation.p_spiral:.3f}"
    figure.suptitle(summary)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def save_feature_maps(maps: dict[str, np.ndarray], folder: str | os.PathLike, stem: str) -> list[Path]:
    """One grid image per layer, `stem-LAYER.png`, each map scaled to its own maximum."""
    plt = plots.pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, activations in maps.items():
        columns = int(np.ceil(np.sqrt(len(activations))))
        rows = int(np.ceil(len(activations) / columns))
        figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.4), squeeze=False)
        for axis in axes.ravel():
            axis.axis("off")
        for axis, activation in zip(axes.ravel(), activations):
            axis.imshow(activation, cmap="gray", vmin=0, vmax=max(float(activation.max()), 1e-12))
        figure.suptitle(f"{stem}: {name} ({len(activations)} maps, {activations.shape[1]}x{activations.shape[2]})")
        path = folder / f"{stem}-{name.replace('.', '_')}.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        written.append(path)
    return written
