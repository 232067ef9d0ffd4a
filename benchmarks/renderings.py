"""Real gz1-sdss cutouts rendered as other services frame them, for `other_framings.py`.

gz1-sdss cutouts (423 px, JPEG quality 75, 4:2:0 chroma, like the zoomed-spirals ones) are scaled
to their galaxy, as Galaxy Zoo 1's were: the framing step measures a half-light radius of 0.063 of
the side (median), against 0.153 in zoomed-spirals' 24" cutouts at 0.2"/px, where a third of the
galaxies run off the frame. Each rendering crops a central share of the cutout and resamples it
(bicubic, as services resample) to the size a service would send, then saves it as that service's
JPEG.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

from galaxymorph.preprocess.augment import central_field

JPEG_QUALITY = 75
SDSS_PIXEL_SCALE = 0.396
"""Arcseconds per pixel of SDSS images, which the issue's definition of the zoomed framing assumed
for gz1-sdss."""


def restretch(image: Image.Image) -> Image.Image:
    """Another colour rendering: a brighter, lower-contrast stretch with bluer bands."""
    return Image.merge("RGB", [band.point(lambda v, gain=gain: min(255, round(255 * gain * (v / 255) ** 0.6)))
                               for band, gain in zip(image.split(), (0.85, 1.0, 1.2))])


RENDERINGS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "zoomed like zoomed-spirals (central 40%, 120 px)": lambda image: central_field(image, 0.4, 120),
    "zoomed as the issue defined it (central 24\" at 0.396\"/px, 120 px)": lambda image: central_field(image, 24 / SDSS_PIXEL_SCALE / 423, 120),
    "overflowing (central 20%, 300 px)": lambda image: central_field(image, 0.2, 300),
    "re-stretched": restretch,
}
"""Zoomed as zoomed-spirals are (the galaxy's half-light radius 2.5 times its gz1-sdss share);
the issue's literal definition, which zooms about 7 times as gz1-sdss is not at 0.396"/px; the
galaxy larger than the frame and upsampled, as big nearby galaxies in 0.1"/px cutouts; and
another colour stretch at the gz1-sdss framing."""


def render(files: list[Path], rendering: Callable[[Image.Image], Image.Image], folder: Path) -> list[Path]:
    """Write each file's rendering into `folder` as a JPEG like the services'; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for file in files:
        path = folder / f"{Path(file).stem}.jpeg"
        with Image.open(file) as image:
            rendering(image.convert("RGB")).save(path, quality=JPEG_QUALITY)
        paths.append(path)
    return paths
