"""The framing measurement and the resampling compiled with numba: the same arithmetic as the numpy
reference (`framing.reference_central_source`, `decode.reference_resample_bands`), a few times cheaper.

`find_central_source` runs once or twice per image on a grid of about 100 px a side, where numpy's
per-call overhead costs more than the work. The kernels below follow the reference step by step:
scipy's running-sum uniform filter (bit for bit), connected components labelled in scipy's order,
and the same sums; tests compare both paths on every gz1-sdss image. Compiled code is cached on
disk (numba's `cache=True`), so a decoding process loads it instead of compiling it again.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NEIGHBOURS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)], dtype=np.int64)


@njit(cache=True)
def _reflect(index: int, length: int) -> int:
    """scipy.ndimage's 'reflect' boundary (d c b a | a b c d), for filters of size 3."""
    if index < 0:
        return -index - 1
    if index >= length:
        return 2 * length - index - 1
    return index


_BINS = 256
_FIRST_BINS = 4096
"""The first histogram of `_ranked` spans [0, 1] in bins narrower than an 8-bit level averaged over
four grids (1/1020), so that one round leaves values that are equal or all but equal."""


@njit(cache=True)
def _bin(value: float, low: float, scale: float, bins: int) -> int:
    """The histogram bin of a value, clamped before the conversion to an integer (infinities go to
    the end bins, where a round that cannot split them sorts them)."""
    place = (value - low) * scale
    return int(min(max(place, 0.0), bins - 1.0)) if place == place else 0


@njit(cache=True)
def _ranked(values: np.ndarray, first: int, last: int) -> tuple[float, float]:
    """The values of ranks `first` and `last` (from 0, `last` - `first` <= 1) of finite `values`,
    exactly: a histogram finds the bin that holds them, and the search goes on among that bin's
    values alone until they are all equal or few enough to sort. The first histogram spans [0, 1],
    where intensities lie (values outside fall in its end bins and are searched on)."""
    low, high, bins = 0.0, 1.0, _FIRST_BINS
    while True:
        if len(values) <= 64:
            ordered = np.sort(values)
            return ordered[first], ordered[last]
        scale = bins / (high - low)
        counts = np.zeros(bins, dtype=np.int64)
        index = np.empty(len(values), dtype=np.int32)
        for i in range(len(values)):
            index[i] = _bin(values[i], low, scale, bins)
            counts[index[i]] += 1
        below, chosen = 0, 0
        while below + counts[chosen] <= first:
            below += counts[chosen]
            chosen += 1
        if last >= below + counts[chosen]:  # adjacent ranks in two bins: the top of one, the bottom of the next
            lower, upper = -np.inf, np.inf
            for i in range(len(values)):
                if index[i] <= chosen:
                    lower = max(lower, values[i])
                else:
                    upper = min(upper, values[i])
            return lower, upper
        kept, n = np.empty(counts[chosen]), 0
        for i in range(len(values)):
            if index[i] == chosen:
                kept[n] = values[i]
                n += 1
        if len(kept) == len(values) and bins == _BINS:  # a range too narrow to split: sort what is left
            ordered = np.sort(kept)
            return ordered[first - below], ordered[last - below]
        values, first, last, bins = kept, first - below, last - below, _BINS
        low, high = values.min(), values.max()
        if low == high:
            return low, low


@njit(cache=True)
def median(values: np.ndarray) -> float:
    """`np.median` of a flat array of finite values: the middle value, or the mean of the two."""
    n = len(values)
    lower, upper = _ranked(values, (n - 1) // 2, n // 2)
    return upper if n % 2 else (lower + upper) / 2.0


@njit(cache=True)
def half_light_radius(distance: np.ndarray, weights: np.ndarray, total: float) -> float:
    """The distance at which the weights, summed nearest first, first reach half of `total`: the
    reference's sort and cumulative sum, with only the distances near the answer sorted (those in
    the histogram bin where the sum crosses one half)."""
    scale = _BINS / distance.max() if distance.max() > 0 else 0.0
    bins = np.minimum((distance * scale).astype(np.int64), _BINS - 1)
    sums = np.zeros(_BINS)
    for i in range(len(distance)):
        sums[bins[i]] += weights[i]
    enclosed = 0.0
    for chosen in range(_BINS):
        if (enclosed + sums[chosen]) / total < 0.5 and chosen < _BINS - 1:
            enclosed += sums[chosen]
            continue
        members = np.nonzero(bins == chosen)[0]
        for i in members[np.argsort(distance[members])]:
            enclosed += weights[i]
            if enclosed / total >= 0.5:
                return distance[i]
    return distance.max()


@njit(cache=True)
def uniform_filter3(image: np.ndarray) -> np.ndarray:
    """`scipy.ndimage.uniform_filter(image, size=3)` of a 2-D float64 array, bit for bit: along axis 0
    then axis 1, each a running sum (`sum += entering - leaving`) divided by 3."""
    across = _running_means(image)
    return np.ascontiguousarray(_running_means(np.ascontiguousarray(across.T)).T)


@njit(cache=True)
def _running_means(image: np.ndarray) -> np.ndarray:
    """scipy's size-3 uniform filter along axis 0, every column's running sum kept at once."""
    height = image.shape[0]
    out = np.empty_like(image)
    total = image[_reflect(-1, height)] + image[0] + image[_reflect(1, height)]
    out[0] = total / 3.0
    for row in range(1, height):
        entering, leaving = image[_reflect(row + 1, height)], image[_reflect(row - 2, height)]
        for column in range(image.shape[1]):
            total[column] += entering[column] - leaving[column]
            out[row, column] = total[column] / 3.0
    return out


@njit(cache=True)
def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a boolean mask, numbered 1.. in the raster order of their first
    pixel, as `scipy.ndimage.label` numbers them, and the area of each (index 0, the background, left 0)."""
    height, width = mask.shape
    labels = np.zeros((height, width), dtype=np.int32)
    stack = np.empty((height * width, 2), dtype=np.int64)
    areas = [0]
    count = 0
    for start_row in range(height):
        for start_column in range(width):
            if not mask[start_row, start_column] or labels[start_row, start_column]:
                continue
            count += 1
            labels[start_row, start_column] = count
            stack[0, 0], stack[0, 1] = start_row, start_column
            size, area = 1, 1
            while size:
                size -= 1
                row, column = stack[size, 0], stack[size, 1]
                for k in range(8):
                    r, c = row + _NEIGHBOURS[k, 0], column + _NEIGHBOURS[k, 1]
                    if 0 <= r < height and 0 <= c < width and mask[r, c] and not labels[r, c]:
                        labels[r, c] = count
                        stack[size, 0], stack[size, 1] = r, c
                        size += 1
                        area += 1
            areas.append(area)
    return labels, np.array(areas)


@njit(cache=True)
def central_source(image: np.ndarray, window_rows: tuple[int, int], window_columns: tuple[int, int],
                   detection_sigma: float, peak_fraction: float, min_area: int) -> tuple[bool, float, float, float, bool, float]:
    """The reference's `find_central_source` on a float64 image: found, x, y, radius_50, at_edge, sky."""
    height, width = image.shape
    sky = median(image.ravel())
    above = image - sky
    noise = 1.4826 * median(np.abs(above).ravel())
    if noise <= 0:
        below = image.ravel()[image.ravel() <= np.percentile(image, 50)]
        noise = max(np.std(below), 1.0 / 255)
    smoothed = uniform_filter3(above)
    top, bottom = window_rows
    left, right = window_columns
    peak = smoothed[top:bottom, left:right].max()
    threshold = max(detection_sigma * noise / 3.0, peak_fraction * peak)
    labels, areas = label_components(smoothed > threshold + 1e-9 * abs(threshold))
    count = len(areas) - 1
    if count == 0:
        return False, 0.0, 0.0, 0.0, False, sky
    window_flux = np.zeros(count + 1)
    for row in range(top, bottom):
        for column in range(left, right):
            window_flux[labels[row, column]] += max(above[row, column], 0.0)
    window_flux[0] = 0.0
    if window_flux.max() <= 0:
        return False, 0.0, 0.0, 0.0, False, sky
    for label in range(count + 1):
        if areas[label] < min_area:
            window_flux[label] = 0.0
    if window_flux.max() <= 0:
        return False, 0.0, 0.0, 0.0, False, sky
    chosen = np.argmax(window_flux)
    n = areas[chosen]
    ys, xs, weights = np.empty(n), np.empty(n), np.empty(n)
    at_edge, k = False, 0
    for row in range(height):
        for column in range(width):
            if labels[row, column] == chosen:
                ys[k], xs[k], weights[k] = row, column, max(image[row, column] - sky, 0.0)
                at_edge |= row == 0 or column == 0 or row == height - 1 or column == width - 1
                k += 1
    total = weights.sum()
    x, y = (weights * xs).sum() / total, (weights * ys).sum() / total
    radius_50 = half_light_radius(np.hypot(xs - x, ys - y), weights, total)
    return True, x, y, max(radius_50, 0.5), at_edge, sky


@njit(cache=True)
def grey_levels(pixels: np.ndarray) -> np.ndarray:
    """PIL's "L" conversion of an 8-bit RGB image (H, W, 3): (299 R + 587 G + 114 B) / 1000, rounded
    as PIL rounds it in 16-bit fixed point."""
    height, width = pixels.shape[:2]
    grey = np.empty((height, width), dtype=np.uint8)
    for row in range(height):
        for column in range(width):
            red, green, blue = pixels[row, column, 0], pixels[row, column, 1], pixels[row, column, 2]
            grey[row, column] = (np.int64(red) * 19595 + np.int64(green) * 38470 + np.int64(blue) * 7471 + 0x8000) >> 16
    return grey


@njit(cache=True)
def reduced_levels(grey: np.ndarray, left: int, top: int, side: int, factor: int) -> np.ndarray:
    """The square (`left`, `top`, `side`) of 8-bit grey levels, reduced by `factor` with PIL's
    `Image.reduce` (box average in 8-bit fixed point), as float32 levels / 255."""
    cells = side // factor
    count = factor * factor
    multiplier = np.int64(np.float32(4294967296.0) / np.float32(256 * count))  # PIL's division_UINT32
    out = np.empty((cells, cells), dtype=np.float32)
    lines = np.empty(cells * factor, dtype=np.int64)
    for row in range(cells):
        lines[:] = 0
        for dy in range(factor):
            source = grey[top + row * factor + dy, left:left + cells * factor]
            for column in range(cells * factor):
                lines[column] += source[column]
        for column in range(cells):
            total = np.int64(0)
            for dx in range(factor):
                total += lines[column * factor + dx]
            out[row, column] = np.float32(((total + count // 2) * multiplier) >> 24) / np.float32(255.0)
    return out


@njit(cache=True)
def linear_filter_taps(start: float, stop: float, length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`decode.reference_filter_taps`: pixel indices and weights, both (size, taps), of PIL's
    antialiased bilinear resize of the pixels between `start` and `stop` of an axis."""
    scale = (stop - start) / size
    widening = max(scale, 1.0)
    taps = 2 * int(np.ceil(widening)) + 1
    pixels = np.empty((size, taps), dtype=np.int64)
    weights = np.empty((size, taps))
    for i in range(size):
        centre = start + (i + 0.5) * scale
        first = min(max(np.trunc(centre - widening + 0.5), 0.0), float(length))
        last = min(max(np.trunc(centre + widening + 0.5), 0.0), float(length))
        total = 0.0
        for k in range(taps):
            pixel = int(first) + k
            weight = max(1.0 - abs((pixel - centre + 0.5) / widening), 0.0) if pixel < last else 0.0
            pixels[i, k], weights[i, k] = min(pixel, length - 1), weight
            total += weight
        if total > 0:
            for k in range(taps):
                weights[i, k] /= total
    return pixels, weights


@njit(cache=True)
def resample_bands(bands: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """`decode.reference_resample_bands`: the square `box` of (C, H, W) bands resampled to (C, size,
    size), rows first, then columns, in float64, clipped to [0, 1] and rounded once to float32."""
    left, top, right, bottom = box
    rows, row_weights = linear_filter_taps(top, bottom, bands.shape[1], size)
    columns, column_weights = linear_filter_taps(left, right, bands.shape[2], size)
    first, last = columns.min(), columns.max() + 1
    channels = bands.shape[0]
    vertical = np.zeros((channels, size, last - first))
    for channel in range(channels):
        for i in range(size):
            line = vertical[channel, i]
            for k in range(rows.shape[1]):
                weight, source = row_weights[i, k], bands[channel, rows[i, k], first:last]
                for column in range(last - first):
                    line[column] += source[column] * weight
    out = np.empty((channels, size, size), dtype=np.float32)
    for channel in range(channels):
        for i in range(size):
            line = vertical[channel, i]
            for j in range(size):
                total = 0.0
                for k in range(columns.shape[1]):
                    total += line[columns[j, k] - first] * column_weights[j, k]
                out[channel, i, j] = min(max(total, 0.0), 1.0)
    return out


@njit(cache=True)
def resample_region(pixels: np.ndarray, region: tuple[int, int, int, int], box: tuple[float, float, float, float],
                    size: int) -> np.ndarray:
    """`resample_bands` of the `region` (left, top, right, bottom) of an 8-bit RGB image (H, W, 3),
    read as float32 levels / 255, for a `box` relative to the region."""
    left, top, right, bottom = region
    levels = (np.arange(256).astype(np.float32) / np.float32(255.0)).astype(np.float64)
    bands = np.empty((pixels.shape[2], bottom - top, right - left))
    for row in range(bottom - top):
        for column in range(right - left):
            for channel in range(pixels.shape[2]):
                bands[channel, row, column] = levels[pixels[top + row, left + column, channel]]
    return resample_bands(bands, box, size)


def warm_up() -> None:
    """Compile the kernels, or load them from numba's cache, in this process: a pool of decoding
    processes forked afterwards inherits them instead of loading them each."""
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[6:10, 6:10] = 200
    grey = grey_levels(image)
    central_source(reduced_levels(grey, 0, 0, 16, 2).astype(np.float64), (3, 5), (3, 5), 3.0, 0.1, 1)
    resample_region(image, (0, 0, 16, 16), (1.0, 1.0, 15.0, 15.0), 8)
    resample_bands(np.zeros((3, 16, 16)), (1.0, 1.0, 15.0, 15.0), 8)
