"""Find the galaxy at the centre of a cutout and measure its size, so that framing can be normalised.

The sky level and its noise come from the median and the median absolute deviation of the image.
After a 3x3 mean filter, pixels more than `DETECTION_SIGMA` noise levels above the sky, and brighter
than `PEAK_FRACTION` of the brightest pixel of the central window, are source pixels; the central
source is the connected group of them (8-connectivity, at least `MIN_AREA` pixels) that holds the
most light within the central `CENTRE_WINDOW` of the image. The isophote relative to the galaxy's
own peak keeps its extent the same however noisy, smooth or zoomed the cutout is (a threshold set
by the noise alone reached further out, and into neighbours, on smoother or zoomed-out cutouts). Its size is
`radius_50`, the radius around its light-weighted centre that encloses half of its sky-subtracted
light: the half-light radius changes little when faint outskirts or a faint neighbour join the
detection, unlike radii that enclose most of the light.

A galaxy is `truncated` when it may run off the image: its pixels reach the edge (a galaxy larger
than the frame, or one joined to a bright neighbour that is), or the "sky" (the median of the
image) is brighter than `BRIGHT_SKY`, which survey renderings keep near black: the frame is then
mostly galaxy light (`fills_frame`), the sky level is the galaxy's, and only its core would be
measured.

`frame_box` turns the central source into the crop that the decoders cut out and resample: the
search runs on a reduced copy of the image and zooms into its centre while the galaxy looks small.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from galaxymorph.config import MIN_IMAGE_SIZE, Preprocessing

DETECTION_SIGMA = 3.0
MIN_AREA = 9
"""Detections smaller than this many pixels are noise peaks, not galaxies."""
CENTRE_WINDOW = 0.1
"""Side of the central window, as a fraction of the image side, where the galaxy must be detected."""
PEAK_FRACTION = 0.1
"""Source pixels are at least this share of the (smoothed, sky-subtracted) central peak."""
BRIGHT_SKY = 0.2
"""A median intensity above this (on a 0-1 scale) is galaxy light filling the frame, not sky."""

FRAMING_WORK_SIZE = 96
"""The central galaxy is searched for on a copy reduced by a whole factor to about this side."""
SMALL_GALAXY = 1 / 16
"""A galaxy whose half-light radius is under this share of the searched region is measured again on
the central half at twice the resolution."""


@dataclass(frozen=True)
class CentralSource:
    """The central galaxy in pixel coordinates (pixel centres at integers); `found` False if none."""

    found: bool
    x: float = 0.0
    y: float = 0.0
    radius_50: float = 0.0
    at_edge: bool = False
    """Its pixels reach the edge of the image."""
    fills_frame: bool = False
    """The image's median is brighter than `BRIGHT_SKY`: galaxy light, not sky."""

    @property
    def truncated(self) -> bool:
        return self.at_edge or self.fills_frame


def find_central_source(intensity: np.ndarray) -> CentralSource:
    """Segment the central source of a 2-D image and measure its centre and half-light radius
    (compiled; `reference_central_source` is the same in numpy)."""
    if using_reference():
        return reference_central_source(intensity)
    from galaxymorph.preprocess import compiled

    image = np.ascontiguousarray(intensity, dtype=np.float64)  # no copy of a float64 grid
    height, width = image.shape
    half = max(1, int(round(CENTRE_WINDOW * min(height, width) / 2)))
    rows, columns = _central_pixels(height, half), _central_pixels(width, half)
    found, x, y, radius_50, at_edge, sky = compiled.central_source(
        image, (rows.start, rows.stop), (columns.start, columns.stop), DETECTION_SIGMA, PEAK_FRACTION, MIN_AREA)
    return CentralSource(True, x, y, radius_50, at_edge, sky > BRIGHT_SKY) if found else CentralSource(False)


def reference_central_source(intensity: np.ndarray) -> CentralSource:
    """`find_central_source` in numpy and scipy: the reference that the compiled path must match."""
    image = np.asarray(intensity, dtype=np.float64)
    segment, sky = _segment(image)
    if segment is None:
        return CentralSource(False)
    ys, xs = np.nonzero(segment)
    weights = np.clip(image[ys, xs] - sky, 0, None)
    total = weights.sum()
    x, y = float((weights * xs).sum() / total), float((weights * ys).sum() / total)
    distance = np.hypot(xs - x, ys - y)
    order = np.argsort(distance)
    radius_50 = float(distance[order][np.searchsorted(np.cumsum(weights[order]) / total, 0.5)])
    height, width = segment.shape
    at_edge = bool(ys.min() == 0 or xs.min() == 0 or ys.max() == height - 1 or xs.max() == width - 1)
    return CentralSource(True, x, y, max(radius_50, 0.5), at_edge, sky > BRIGHT_SKY)


_REFERENCE = ContextVar("galaxymorph_reference_kernels", default=False)


@contextmanager
def reference_kernels() -> Iterator[None]:
    """Inside the block, framing and resampling run the numpy reference instead of the compiled
    kernels (in this thread), for comparing the two."""
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def using_reference() -> bool:
    """Whether `reference_kernels` is in force."""
    return _REFERENCE.get()


def central_segment(intensity: np.ndarray) -> np.ndarray | None:
    """The pixels (boolean mask) of the central source of a 2-D image, or None when there is none."""
    return _segment(np.asarray(intensity, dtype=np.float64))[0]


def _segment(image: np.ndarray) -> tuple[np.ndarray | None, float]:
    """`central_segment` of a float64 image, and the sky level it measured."""
    from scipy import ndimage

    sky = float(np.median(image))
    above = image - sky
    noise = 1.4826 * np.median(np.abs(above))
    if noise <= 0:  # quantised, flat skies (8-bit JPEGs): the quantisation step sets the noise
        noise = max(np.std(image[image <= np.percentile(image, 50)]), 1.0 / 255)
    smoothed = ndimage.uniform_filter(above, size=3)
    height, width = image.shape
    half = max(1, int(round(CENTRE_WINDOW * min(height, width) / 2)))
    window = (_central_pixels(height, half), _central_pixels(width, half))
    peak = smoothed[window].max()
    threshold = max(DETECTION_SIGMA * noise / 3.0, PEAK_FRACTION * peak)
    # Values within rounding of the threshold count as below it in any orientation of the image
    # (on 8-bit images many smoothed values fall exactly on it; the filter's sums round differently
    # when the image is turned).
    labels, count = ndimage.label(smoothed > threshold + 1e-9 * abs(threshold), structure=np.ones((3, 3)))
    if count == 0:
        return None, sky
    window_flux = np.bincount(labels[window].ravel(), weights=np.clip(above[window], 0, None).ravel(),
                              minlength=count + 1)
    window_flux[0] = 0.0
    if window_flux.max() <= 0:
        return None, sky
    window_flux[np.bincount(labels.ravel(), minlength=count + 1) < MIN_AREA] = 0.0
    if window_flux.max() <= 0:
        return None, sky
    return labels == int(np.argmax(window_flux)), sky


def _central_pixels(length: int, half: int) -> slice:
    """The pixels within `half` of the centre line of an axis: symmetric about it for odd and even
    lengths alike, so that framing is exactly equivariant under 90-degree rotations and flips."""
    centre = (length - 1) / 2
    return slice(math.ceil(centre - half), math.floor(centre + half) + 1)


def _crop_box(width: int, height: int, crop_fraction: float) -> tuple[float, float, float, float]:
    side = min(width, height) * crop_fraction
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def frame_box(width: int, height: int, preprocessing: Preprocessing,
              reduced_intensity: Callable[[tuple[int, int, int], int], np.ndarray],
              ) -> tuple[tuple[float, float, float, float], bool | None, bool | None]:
    """The crop box: around the central galaxy when framing is on and finds one, else the fixed crop;
    the whole image (its central square) when galaxy light fills it. Then whether a galaxy was
    found and whether it may be truncated (`CentralSource.truncated`; None when framing is off).

    `reduced_intensity((left, top, side), factor)` gives the intensity of a square region reduced by
    a whole factor (`side` a multiple of it). The galaxy is searched for on the whole image reduced
    to about `FRAMING_WORK_SIZE` px; while it looks small there, the search zooms into the central
    half, so that small galaxies are measured with enough pixels. `batched._frame_boxes` is the
    same for batches in torch (the GPU's path): a change here belongs there too.
    """
    fixed = _crop_box(width, height, preprocessing.crop_fraction)
    if not preprocessing.framing:
        return fixed, None, None
    side, truncated = min(width, height), False
    while True:
        factor = max(1, side // FRAMING_WORK_SIZE)
        searched = side // factor * factor
        search_left, search_top = (width - searched) / 2, (height - searched) / 2
        source = find_central_source(_centred_search(reduced_intensity, search_left, search_top, searched, factor))
        if not source.found:
            return fixed, False, False
        if side == min(width, height):
            truncated = source.truncated
            if source.fills_frame:  # its measured size would be its core's
                return _crop_box(width, height, 1.0), True, True
        if factor == 1 or source.radius_50 * factor > side * SMALL_GALAXY:
            break
        side //= 2
    x, y = search_left + (source.x + 0.5) * factor, search_top + (source.y + 0.5) * factor
    crop = float(np.clip(2 * source.radius_50 * factor / preprocessing.frame_fill, MIN_IMAGE_SIZE, min(width, height)))
    left, top = float(np.clip(x - crop / 2, 0, width - crop)), float(np.clip(y - crop / 2, 0, height - crop))
    return (left, top, left + crop, top + crop), True, truncated


def _centred_search(reduced_intensity: Callable[[tuple[int, int, int], int], np.ndarray],
                    left: float, top: float, side: int, factor: int) -> np.ndarray:
    """The reduced intensity of the square at (`left`, `top`), centred on the image. Where centring
    needs half a pixel, the grids at the pixels on either side are averaged (exactly, in float64), so
    that the search, and framing, is exactly equivariant under 90-degree rotations and flips."""
    grids = [reduced_intensity((x, y, side), factor)
             for y in sorted({math.floor(top), math.ceil(top)}) for x in sorted({math.floor(left), math.ceil(left)})]
    return grids[0].astype(np.float64) if len(grids) == 1 else np.mean(grids, axis=0, dtype=np.float64)
