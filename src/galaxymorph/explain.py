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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from galaxymorph.catalog import CatalogRow
from galaxymorph.config import DEFAULT_MODEL
from galaxymorph.errors import GalaxyMorphError
from galaxymorph.labels import has_spiral_semantics, spiral_probability
from galaxymorph.models import LoadedModel, load_model
from galaxymorph.outputs import plots
from galaxymorph.prediction import Classifier
from galaxymorph.preprocess.decode import read_model_input
from galaxymorph.sources import iter_inputs

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

    def caption(self, title: str) -> str:
        """`title: class probability, p_spiral p`, as the explanation figures show it."""
        caption = f"{title}: {self.target} {self.probabilities[self.target]:.1%}"
        return caption if np.isnan(self.p_spiral) else f"{caption}, p_spiral {self.p_spiral:.3f}"

    def save(self, folder: str | os.PathLike, stem: str) -> tuple[Path, Path]:
        """Write `stem.png` (input, overlay and map, captioned) and `stem.npy` (the map)."""
        return plots.save_explanation(self.image, self.attribution, folder, stem, method=self.method,
                                      caption=self.caption(stem))

    def png(self, title: str) -> bytes:
        """The figure of `save` as PNG bytes."""
        return plots.png_bytes(plots.explanation_figure(self.image, self.attribution, self.method, self.caption(title)))


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


@dataclass(frozen=True)
class ExplainedInput:
    """One input of `explain_inputs`: its explanation and the files written, or why it has none."""

    row: CatalogRow
    explanation: Explanation | None
    written: tuple[Path, ...] = ()
    error: str = ""


def explain_inputs(inputs: Iterable[str | os.PathLike], output: str | os.PathLike, *,
                   model: str | os.PathLike | LoadedModel = DEFAULT_MODEL, method: str = "gradcam",
                   target: str | None = None, with_feature_maps: bool = False) -> Iterator[ExplainedInput]:
    """Explain every image of files, folders or catalogs (read as `classify` reads them) into the
    folder `output`: ID.png and ID.npy (`Explanation.save`), and with `with_feature_maps` one grid
    per convolutional layer. An image that cannot be explained comes with its error; the rest go on."""
    loaded = load_model(model)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    for row in iter_inputs(inputs):
        stem = row.id.replace("/", "_").replace("\\", "_")
        try:
            if row.error or not isinstance(row.file, Path):
                raise ValueError(row.error or f"{row.id}: explain reads image files, not members of HDF5 files or shards")
            explanation = explain(loaded, row.file, method=method, target=target)
            written = explanation.save(output, stem)
            if with_feature_maps:
                written += tuple(plots.save_feature_maps(feature_maps(loaded, explanation.image), output, stem))
        except (GalaxyMorphError, ValueError) as error:
            yield ExplainedInput(row, None, error=str(error))
            continue
        yield ExplainedInput(row, explanation, written)


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
