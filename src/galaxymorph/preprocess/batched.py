"""Framing and resampling of whole batches of decoded 8-bit images as torch operations, so that they
run on a GPU (or on the CPU, where the tests compare them with the per-image kernels).

The same steps as `framing.frame_box` and `decode._frame_rgb`, for N images of one size at once:
PIL's grey conversion and reduction in integer arithmetic; the sky and noise medians by sorting; the
3x3 mean by padding; connected components by growing each source pixel's label to the largest
index in its group (3x3 max-pooling, then pointer jumping) instead of scipy's raster-order labels;
flux, area and the first pixel of each group by `scatter_add` and `scatter_reduce`; the half-light
radius by a sort and a cumulative sum. The search zooms into the centre for the images where the
galaxy looks small, as `frame_box` does. Resampling applies PIL's antialiased bilinear filter as
two dense matrices per image. Everything runs in float64 (so not on Apple's MPS). On the CPU the
model inputs are the per-image path's, or one float32 step (6e-8) from them, with the same galaxy
flags, on every image of gz1-sdss, gz2-sdss and zoomed-spirals (`benchmarks/framing_speed.py
--batched`, `tests/test_batched_framing.py`). On a GPU the sums run in another order (atomic
`scatter_add`, parallel `cumsum`), so two sources of exactly equal flux in the central window may be
told apart differently; `benchmarks/gpu_check.py` measures the agreement there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from galaxymorph.config import MIN_IMAGE_SIZE, Preprocessing
from galaxymorph.preprocess.framing import (BRIGHT_SKY, CENTRE_WINDOW, DETECTION_SIGMA, FRAMING_WORK_SIZE, MIN_AREA,
                                            PEAK_FRACTION, SMALL_GALAXY, _central_pixels, _crop_box)


@dataclass
class FramedBatch:
    """Model inputs (N, 3, S, S) float32 on the images' device; whether framing found a central
    galaxy and whether it runs off the image (N,) bool, None when framing is off (or N is 0)."""

    inputs: torch.Tensor
    galaxy_found: torch.Tensor | None
    galaxy_truncated: torch.Tensor | None


def frame_batch(pixels: torch.Tensor, preprocessing: Preprocessing = Preprocessing()) -> FramedBatch:
    """Frame and resample N decoded images of one size, uint8 (N, H, W, 3) RGB on any device: the
    model inputs that `decode._frame_rgb` makes of each."""
    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
        raise ValueError(f"pixels must be uint8 (N, H, W, 3), got {pixels.dtype} {tuple(pixels.shape)}")
    count, height, width = pixels.shape[:3]
    boxes = torch.tensor(_crop_box(width, height, preprocessing.crop_fraction), dtype=torch.float64,
                         device=pixels.device).repeat(count, 1)
    found = truncated = None
    if preprocessing.framing and count:
        boxes, found, truncated = _frame_boxes(_grey_levels(pixels), boxes, preprocessing)
    return FramedBatch(_resample(pixels, boxes, preprocessing.image_size), found, truncated)


def _grey_levels(pixels: torch.Tensor) -> torch.Tensor:
    """PIL's "L" conversion in its 16-bit fixed point, (N, H, W) int32."""
    rgb = pixels.to(torch.int32)
    return (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16


def _reduced_levels(grey: torch.Tensor, left: int, top: int, side: int, factor: int) -> torch.Tensor:
    """PIL's `Image.reduce` of the square (`left`, `top`, `side`) of each grey image, in its 8-bit
    fixed point, as float32 levels / 255."""
    cells = side // factor
    square = grey[:, top:top + cells * factor, left:left + cells * factor].to(torch.int64)
    total = square.reshape(len(grey), cells, factor, cells, factor).sum(dim=(2, 4))
    count = factor * factor
    multiplier = int(np.float32(4294967296.0) / np.float32(256 * count))  # PIL's division_UINT32
    return (((total + count // 2) * multiplier) >> 24).to(torch.float32) / np.float32(255.0)


def _centred_search(grey: torch.Tensor, left: float, top: float, side: int, factor: int) -> torch.Tensor:
    """`framing._centred_search`: the reduced square centred on the image, in float64, averaging
    the grids on either side where centring needs half a pixel (in numpy's order)."""
    grids = [_reduced_levels(grey, x, y, side, factor)
             for y in sorted({math.floor(top), math.ceil(top)}) for x in sorted({math.floor(left), math.ceil(left)})]
    total = grids[0].to(torch.float64)
    for grid in grids[1:]:
        total = total + grid.to(torch.float64)
    return total / len(grids) if len(grids) > 1 else total


def _median(values: torch.Tensor) -> torch.Tensor:
    """`np.median` of each row of (N, P)."""
    ordered = values.sort(dim=1).values
    n = values.shape[1]
    lower, upper = ordered[:, (n - 1) // 2], ordered[:, n // 2]
    return upper if n % 2 else (lower + upper) / 2.0


@dataclass
class _Sources:
    """The central source of each of N images, as `framing.CentralSource`'s fields."""

    found: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    radius_50: torch.Tensor
    at_edge: torch.Tensor
    fills_frame: torch.Tensor


def _central_sources(image: torch.Tensor) -> _Sources:
    """`framing.find_central_source` of each of N float64 images (N, h, w)."""
    count, height, width = image.shape
    flat = image.reshape(count, -1)
    sky = _median(flat)
    above = image - sky[:, None, None]
    noise = 1.4826 * _median(above.abs().reshape(count, -1))
    flat_sky = noise <= 0
    if flat_sky.any():  # quantised, flat skies: the spread of the values up to the median sets the noise
        below = flat <= sky[:, None]
        kept = below.sum(dim=1)
        mean = (flat * below).sum(dim=1) / kept
        spread = torch.sqrt((((flat - mean[:, None]) * below) ** 2).sum(dim=1) / kept)
        noise = torch.where(flat_sky, spread.clamp(min=1.0 / 255), noise)
    padded = F.pad(above[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]  # scipy's "reflect" for a 3x3 filter
    columns = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3.0
    smoothed = (columns[:, :, :-2] + columns[:, :, 1:-1] + columns[:, :, 2:]) / 3.0
    half = max(1, int(round(CENTRE_WINDOW * min(height, width) / 2)))
    rows, cols = _central_pixels(height, half), _central_pixels(width, half)
    peak = smoothed[:, rows, cols].amax(dim=(1, 2))
    threshold = torch.maximum(DETECTION_SIGMA * noise / 3.0, PEAK_FRACTION * peak)
    mask = smoothed > (threshold + 1e-9 * threshold.abs())[:, None, None]

    labels = _component_labels(mask)  # (N, h*w): 0 off the sources, else the largest pixel index + 1 of the group
    groups = height * width + 1
    area = torch.zeros(count, groups, dtype=torch.float64, device=image.device).scatter_add_(
        1, labels, torch.ones_like(flat))
    window_labels = labels.reshape(count, height, width)[:, rows, cols].reshape(count, -1)
    window_flux = torch.zeros(count, groups, dtype=torch.float64, device=image.device).scatter_add_(
        1, window_labels, above[:, rows, cols].clamp(min=0).reshape(count, -1))
    window_flux[:, 0] = 0.0
    window_flux[area < MIN_AREA] = 0.0
    best = window_flux.max(dim=1).values
    found = best > 0
    # Of groups with equal flux, scipy's labels (raster order of the first pixel) pick the earliest.
    pixel = torch.arange(height * width, device=image.device).expand(count, -1)
    first_pixel = torch.full((count, groups), height * width, dtype=torch.int64, device=image.device).scatter_reduce_(
        1, labels, pixel, reduce="amin")
    chosen = torch.where(window_flux == best[:, None], first_pixel, height * width).argmin(dim=1)

    segment = (labels == chosen[:, None]) & found[:, None]
    weights = (flat - sky[:, None]).clamp(min=0) * segment
    total = weights.sum(dim=1)
    safe_total = torch.where(total > 0, total, 1.0)
    ys = torch.div(pixel, width, rounding_mode="floor").to(torch.float64)
    xs = (pixel % width).to(torch.float64)
    x, y = (weights * xs).sum(dim=1) / safe_total, (weights * ys).sum(dim=1) / safe_total
    distance = torch.where(segment, torch.hypot(xs - x[:, None], ys - y[:, None]), torch.inf)
    ordered, order = distance.sort(dim=1)
    enclosed = weights.gather(1, order).cumsum(dim=1) / safe_total[:, None]
    crossing = (enclosed < 0.5).sum(dim=1, keepdim=True).clamp(max=height * width - 1)
    radius_50 = ordered.gather(1, crossing)[:, 0].clamp(min=0.5)
    edge = torch.ones(height, width, dtype=torch.bool, device=image.device)
    edge[1:-1, 1:-1] = False
    at_edge = (segment & edge.reshape(1, -1)).any(dim=1)
    return _Sources(found, x, y, radius_50, at_edge & found, (sky > BRIGHT_SKY) & found)


def _component_labels(mask: torch.Tensor) -> torch.Tensor:
    """8-connected components of (N, h, w) masks as (N, h*w) int64: each pixel of a group holds the
    largest flat index of the group, plus one; 0 off the mask."""
    count, height, width = mask.shape
    # float32 holds every index of a search grid (at most about 200 px a side) exactly, and pools fastest
    index = torch.arange(1, height * width + 1, dtype=torch.float32, device=mask.device).reshape(1, height, width)
    labels = torch.where(mask, index, 0.0)
    while True:
        grown = torch.where(mask, F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0], 0.0)
        flat = grown.reshape(count, -1)
        # Every label names a pixel of the same group whose own label is at least as large: jump to it.
        jumped = flat.gather(1, (flat.long() - 1).clamp(min=0)).reshape(count, height, width)
        grown = torch.where(mask, torch.maximum(grown, jumped), 0.0)
        if torch.equal(grown, labels):
            return labels.reshape(count, -1).long()
        labels = grown


def _frame_boxes(grey: torch.Tensor, boxes: torch.Tensor,
                 preprocessing: Preprocessing) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`framing.frame_box` of each grey image (N, H, W), step for step (a change there belongs here
    too): crop boxes (N, 4) float64 (starting from the fixed crop, `boxes`), whether a galaxy was
    found and whether it may be truncated."""
    count, height, width = grey.shape
    found = torch.zeros(count, dtype=torch.bool, device=grey.device)
    truncated = torch.zeros_like(found)
    whole = torch.tensor(_crop_box(width, height, 1.0), dtype=torch.float64, device=grey.device)
    active = torch.arange(count, device=grey.device)
    full = side = min(width, height)
    while len(active):
        factor = max(1, side // FRAMING_WORK_SIZE)
        searched = side // factor * factor
        search_left, search_top = (width - searched) / 2, (height - searched) / 2
        source = _central_sources(_centred_search(grey[active], search_left, search_top, searched, factor))
        settled = ~source.found  # the fixed crop, nothing found (at any zoom, as `frame_box`)
        found[active] = source.found
        if side == full:
            truncated[active] = source.at_edge | source.fills_frame
            fills = source.fills_frame
            boxes[active[fills]] = whole
            settled = settled | fills
        measured = source.found & ~settled
        if factor > 1:
            measured &= source.radius_50 * factor > side * SMALL_GALAXY
        chosen = active[measured]
        x = search_left + (source.x[measured] + 0.5) * factor
        y = search_top + (source.y[measured] + 0.5) * factor
        crop = (2 * source.radius_50[measured] * factor / preprocessing.frame_fill).clamp(MIN_IMAGE_SIZE, full)
        left = torch.minimum((x - crop / 2).clamp(min=0), width - crop)
        top = torch.minimum((y - crop / 2).clamp(min=0), height - crop)
        boxes[chosen] = torch.stack([left, top, left + crop, top + crop], dim=1)
        active = active[~(settled | measured)]
        side //= 2
    truncated &= found
    return boxes, found, truncated


def _resample(pixels: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The square `boxes` (N, 4: left, top, right, bottom) of uint8 images (N, H, W, 3) resampled to
    (N, 3, size, size) float32 in [0, 1]: `decode.reference_resample_bands` of each, rows first, in
    float64, clipped and rounded once to float32."""
    count, height, width = pixels.shape[:3]
    bands = (pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0).to(torch.float64)  # float32 levels, as the decoders read them
    margin = 2 + torch.ceil((boxes[:, 2] - boxes[:, 0]) / size)  # the filter's reach, as `decode._resampled_region`
    rows = _filter_matrix(boxes[:, 1], boxes[:, 3], margin, height, size)
    columns = _filter_matrix(boxes[:, 0], boxes[:, 2], margin, width, size)
    framed = rows[:, None] @ bands @ columns[:, None].transpose(2, 3)
    return framed.clamp(0.0, 1.0).to(torch.float32)


def _filter_matrix(start: torch.Tensor, stop: torch.Tensor, margin: torch.Tensor, length: int, size: int) -> torch.Tensor:
    """`decode.reference_filter_taps` as dense weights (N, size, length): PIL's antialiased bilinear
    filter over the region `decode._resampled_region` cuts around each box, normalised per output pixel."""
    first_pixel = (torch.floor(start) - margin).clamp(min=0)
    region = (torch.ceil(stop) + margin).clamp(max=length) - first_pixel
    start, stop = start - first_pixel, stop - first_pixel  # relative to the region, as the per-image path
    scale = (stop - start) / size
    widening = scale.clamp(min=1.0)
    centres = start[:, None] + (torch.arange(size, dtype=torch.float64, device=start.device) + 0.5) * scale[:, None]
    low = torch.trunc(centres - widening[:, None] + 0.5).clamp(min=0)
    low = torch.minimum(low, region[:, None])
    high = torch.minimum(torch.trunc(centres + widening[:, None] + 0.5).clamp(min=0), region[:, None])
    pixel = torch.arange(length, dtype=torch.float64, device=start.device) - first_pixel[:, None]  # (N, length)
    pixel = pixel[:, None, :]
    weights = (1.0 - ((pixel - centres[..., None] + 0.5) / widening[:, None, None]).abs()).clamp(min=0)
    weights = weights * ((pixel >= low[..., None]) & (pixel < high[..., None]))
    total = weights.sum(dim=2, keepdim=True)
    return weights / torch.where(total > 0, total, 1.0)
