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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DETECTION_SIGMA = 3.0
MIN_AREA = 9
"""Detections smaller than this many pixels are noise peaks, not galaxies."""
CENTRE_WINDOW = 0.1
"""Side of the central window, as a fraction of the image side, where the galaxy must be detected."""
PEAK_FRACTION = 0.1
"""Source pixels are at least this share of the (smoothed, sky-subtracted) central peak."""
BRIGHT_SKY = 0.2
"""A median intensity above this (on a 0-1 scale) is galaxy light filling the frame, not sky."""


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
    """Segment the central source of a 2-D image and measure its centre and half-light radius."""
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
