"""Training-time augmentation that respects the symmetries of a galaxy image.

A galaxy has no preferred orientation, so any rotation keeps its class; a mirror flip keeps its
class too, except that it reverses the winding of spiral arms, so mirrored clockwise spirals become
anticlockwise ones. A small zoom jitter makes the model less sensitive to the galaxy's apparent size.
`survey_augment` then makes one survey's images look like another's: coarser resolution, other
colour stretches, more noise, stronger JPEG compression. `tight_cutout` re-renders a whole wide
cutout as a cutout service makes a tight, zoomed one, in which the galaxy fills or overflows the
frame; the model input is then made from it as from any file.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def symmetry_augment(
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    output_size: int,
    mirror_permutation: np.ndarray,
    generator: torch.Generator,
    zoom_range: tuple[float, float] = (0.9, 1.1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation, mirror flip and zoom of a batch, resampled to the central `output_size` px.

    `images` (N, C, S, S) with S >= output_size; `targets` class indices, swapped through
    `mirror_permutation` where an image is mirrored.
    """
    count = images.shape[0]
    angles = torch.rand(count, generator=generator) * 2 * math.pi
    zooms = torch.empty(count).uniform_(*zoom_range, generator=generator)
    mirrored = torch.rand(count, generator=generator) < 0.5
    theta = _affine(angles, output_size / images.shape[-1] / zooms, mirrored)
    permutation = torch.as_tensor(mirror_permutation)
    targets = torch.where(mirrored, permutation[targets], targets)
    return _resample(images, theta, output_size), targets


@dataclass(frozen=True)
class SurveyAugmentation:
    """How strongly `survey_augment` perturbs an image; each perturbation hits a random share of them.

    Blur: downsampled by a factor up to `max_downsample` (area average) and resampled back up, as a
    galaxy that spans fewer pixels or a coarser pixel scale looks once framed. Stretch: intensity to
    a power (gamma) drawn log-uniformly up to `max_gamma_factor` either way, and per-band gains up to
    `max_band_gain` either way. Noise: Gaussian, standard deviation up to `max_noise`. JPEG: quality
    drawn from `jpeg_quality`.
    """

    share: float = 0.5
    max_downsample: float = 3.0
    max_gamma_factor: float = 2.0
    max_band_gain: float = 1.25
    max_noise: float = 0.04
    jpeg_share: float = 0.25
    jpeg_quality: tuple[int, int] = (20, 90)

    def to_dict(self) -> dict:
        return asdict(self)


def survey_augment(images: torch.Tensor, generator: torch.Generator,
                   settings: SurveyAugmentation = SurveyAugmentation()) -> torch.Tensor:
    """Perturb a float batch (N, C, S, S) in [0, 1] like other surveys' cutouts; returns a new batch."""
    count, channels, size = images.shape[0], images.shape[1], images.shape[-1]

    def chosen(share: float) -> torch.Tensor:
        return torch.rand(count, generator=generator) < share

    def log_uniform(limit: float, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.exp((2 * torch.rand(shape, generator=generator) - 1) * math.log(limit))

    images = images.clone()
    factors = 1 + torch.rand(count, generator=generator) * (settings.max_downsample - 1)
    for i in torch.nonzero(chosen(settings.share)).flatten().tolist():
        small = max(4, int(round(size / float(factors[i]))))
        reduced = F.interpolate(images[i:i + 1], size=(small, small), mode="area")
        images[i] = F.interpolate(reduced, size=(size, size), mode="bilinear", align_corners=False)[0]
    stretched = chosen(settings.share)
    gammas = torch.where(stretched, log_uniform(settings.max_gamma_factor, (count,)), 1.0)
    gains = torch.where(stretched[:, None], log_uniform(settings.max_band_gain, (count, channels)), 1.0)
    images = images.clamp(0, 1) ** gammas[:, None, None, None] * gains[:, :, None, None]
    noise = torch.where(chosen(settings.share), torch.rand(count, generator=generator) * settings.max_noise, 0.0)
    images = (images + noise[:, None, None, None] * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    qualities = torch.randint(settings.jpeg_quality[0], settings.jpeg_quality[1] + 1, (count,), generator=generator)
    for i in torch.nonzero(chosen(settings.jpeg_share)).flatten().tolist():
        images[i] = _jpeg_round_trip(images[i], int(qualities[i]))
    return images


@dataclass(frozen=True)
class TightCutouts:
    """How `tight_cutout` turns a wide cutout into a tight one.

    The field is the central `field_share` of the side (drawn log-uniformly), resampled to a side
    drawn from `size` px (bicubic, as cutout services resample), then saved as JPEG at
    `jpeg_quality`. gz1-sdss cutouts are scaled to their galaxy (about ten Petrosian radii across),
    where the defaults zoom in 2-8 times: the galaxy fills or overflows the frame, and small fields
    are upsampled as soft as tight 0.1-0.2"/px SDSS cutouts.
    """

    field_share: tuple[float, float] = (0.12, 0.5)
    size: tuple[int, int] = (96, 320)
    jpeg_quality: int = 75

    def __post_init__(self) -> None:
        if not 0.0 < self.field_share[0] <= self.field_share[1] <= 1.0:
            raise ValueError(f"field_share must be a range within (0, 1], got {self.field_share}")
        if not 8 <= self.size[0] <= self.size[1]:
            raise ValueError(f"size must be a range of sides of at least 8 px, got {self.size}")

    def to_dict(self) -> dict:
        return asdict(self)


def tight_cutout(image: Image.Image, rng: np.random.Generator, settings: TightCutouts = TightCutouts()) -> bytes:
    """A tight JPEG cutout (bytes) of the centre of a wide RGB cutout."""
    low, high = settings.field_share
    share = math.exp(rng.uniform(math.log(low), math.log(high)))
    size = int(rng.integers(settings.size[0], settings.size[1] + 1))
    buffer = io.BytesIO()
    central_field(image, share, size).save(buffer, format="JPEG", quality=settings.jpeg_quality)
    return buffer.getvalue()


def central_field(image: Image.Image, share: float, size: int) -> Image.Image:
    """The central `share` of an image's side resampled to `size` px (bicubic, as cutout services resample)."""
    side = min(image.size) * share
    left, top = (image.width - side) / 2, (image.height - side) / 2
    return image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


def _jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(decoded).permute(2, 0, 1)


def centre_view(images: torch.Tensor, output_size: int) -> torch.Tensor:
    """The un-augmented view: the central `output_size` px, resampled exactly as in training."""
    count = images.shape[0]
    theta = _affine(torch.zeros(count), torch.full((count,), output_size / images.shape[-1]),
                    torch.zeros(count, dtype=torch.bool))
    return _resample(images, theta, output_size)


SYMMETRY_VIEWS = 8
MIRRORED_VIEWS = slice(4, 8)
"""Of the stacked symmetry views, these are mirror images (their winding labels are swapped)."""


def symmetry_views(images: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The 8 symmetries of a square image batch (N, C, S, S), an array or a tensor, stacked
    view-major into (8 N, C, S, S).

    Rotations by 0, 90, 180 and 270 degrees, then the same four mirrored. The set of views of a
    rotated galaxy is the set of views of the galaxy, so averaging over them gives identical
    predictions for a galaxy and its 90-degree rotations.
    """
    if isinstance(images, torch.Tensor):
        rotations = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
        return torch.cat(rotations + [view.flip(-1) for view in rotations])
    rotations = [np.rot90(images, k, axes=(2, 3)) for k in range(4)]
    return np.ascontiguousarray(np.concatenate(rotations + [view[..., ::-1] for view in rotations]))


def mirror(images: torch.Tensor) -> torch.Tensor:
    """Left-right mirror image of a batch (N, C, H, W)."""
    return torch.flip(images, dims=[-1])


def _affine(angles: torch.Tensor, scales: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angles) * scales, torch.sin(angles) * scales
    flip = torch.where(mirrored, -1.0, 1.0)
    zero = torch.zeros_like(cos)
    return torch.stack([torch.stack([cos * flip, -sin, zero], 1), torch.stack([sin * flip, cos, zero], 1)], 1)


def _resample(images: torch.Tensor, theta: torch.Tensor, output_size: int) -> torch.Tensor:
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], output_size, output_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
