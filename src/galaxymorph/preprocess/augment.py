"""Training-time augmentation that respects the symmetries of a galaxy image.

A galaxy has no preferred orientation, so any rotation keeps its class; a mirror flip keeps its
class too, except that it reverses the winding of spiral arms, so mirrored clockwise spirals become
anticlockwise ones. A small zoom jitter makes the model less sensitive to the galaxy's apparent size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


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


def centre_view(images: torch.Tensor, output_size: int) -> torch.Tensor:
    """The un-augmented view: the central `output_size` px, resampled exactly as in training."""
    count = images.shape[0]
    theta = _affine(torch.zeros(count), torch.full((count,), output_size / images.shape[-1]),
                    torch.zeros(count, dtype=torch.bool))
    return _resample(images, theta, output_size)


SYMMETRY_VIEWS = 8
MIRRORED_VIEWS = slice(4, 8)
"""Of the stacked symmetry views, these are mirror images (their winding labels are swapped)."""


def symmetry_views(images: np.ndarray) -> np.ndarray:
    """The 8 symmetries of a square image batch (N, C, S, S), stacked view-major into (8 N, C, S, S).

    Rotations by 0, 90, 180 and 270 degrees, then the same four mirrored. The set of views of a
    rotated galaxy is the set of views of the galaxy, so averaging over them gives identical
    predictions for a galaxy and its 90-degree rotations.
    """
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
