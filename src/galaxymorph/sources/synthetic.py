"""Synthetic galaxies: the embedded examples of the demo and the data of the tests.

Ellipticals follow a de Vaucouleurs profile (Sersic n = 4) in warm colours; spirals are an
exponential disk with a small bulge and logarithmic arms in blue-white colours. Both are seen at a
random orientation and inclination on a noisy sky with a few stars, framed like an SDSS cutout
(the galaxy spans the central 10-30% of the image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("elliptical", "spiral")
_COLOURS = {"elliptical": (1.0, 0.78, 0.52), "spiral": (0.72, 0.82, 1.0)}


def synthetic_galaxy(kind: str, rng: np.random.Generator, *, size: int = 128, scale: float | None = None) -> np.ndarray:
    """One (size, size, 3) uint8 gri-like composite of an elliptical or a spiral galaxy.

    `scale`: the galaxy's size in px per px of a 128 px image (default `size / 128`, which frames
    the galaxy like an SDSS cutout); a larger one makes a galaxy that overflows the frame."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if scale is not None and not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    scale = size / 128 if scale is None else scale
    y, x = np.mgrid[:size, :size].astype(np.float64) - (size - 1) / 2 - rng.normal(0, scale, 2)[:, None, None]
    angle = rng.uniform(0, np.pi)
    major = x * np.cos(angle) + y * np.sin(angle)
    minor = -x * np.sin(angle) + y * np.cos(angle)
    if kind == "elliptical":
        axis_ratio = rng.uniform(0.6, 1.0)
        radius = np.hypot(major, minor / axis_ratio)
        effective = rng.uniform(4.0, 7.0) * scale
        light = np.exp(-7.67 * ((radius / effective) ** 0.25 - 1)) * 0.05
    else:
        axis_ratio = rng.uniform(0.45, 1.0)
        radius = np.hypot(major, minor / axis_ratio)
        theta = np.arctan2(minor / axis_ratio, major)
        length = rng.uniform(5.0, 8.0) * scale
        pitch = np.tan(np.radians(rng.uniform(25, 40))) * rng.choice([-1, 1])
        arms = 1 + 0.9 * np.cos(2 * (theta - np.log(radius / length + 1e-3) / pitch))
        bulge = 0.6 * np.exp(-(radius / (0.25 * length)) ** 2)
        light = (np.exp(-radius / length) * arms + bulge) * 0.4
    colour = np.array(_COLOURS[kind]) * rng.uniform(0.8, 1.2)
    image = light[..., None] * colour
    star = 1.2 * size / 128  # the stars' width in px: the seeing, whatever the galaxy's size
    for _ in range(rng.integers(1, 5)):
        sy, sx = rng.uniform(0, size, 2)
        image += rng.uniform(0.2, 3) * np.exp(-((y + (size - 1) / 2 - sy) ** 2 + (x + (size - 1) / 2 - sx) ** 2) / (2 * star ** 2))[..., None] * rng.uniform(0.6, 1.0, 3)
    image += rng.normal(0.0, 0.012, image.shape)
    stretched = np.arcsinh(np.clip(image, 0, None) / 0.03) / np.arcsinh(1.5 / 0.03)
    return np.clip(stretched * 255, 0, 255).astype(np.uint8)


def write_examples(folder: str | Path, count: int, *, seed: int = 0, size: int = 128,
                   suffix: str = ".jpeg") -> list[tuple[Path, str]]:
    """Write `count` synthetic galaxies, alternating kinds; returns (path, kind) pairs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(count):
        kind = KINDS[i % 2]
        path = folder / f"synthetic-{i:04d}-{kind}{suffix}"
        Image.fromarray(synthetic_galaxy(kind, rng, size=size)).save(path, quality=92)
        examples.append((path, kind))
    return examples
