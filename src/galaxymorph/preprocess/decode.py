"""Decode JPEG, PNG and FITS files into model inputs.

Every reader ends in the same place: a float32 array (3, S, S) in [0, 1], the crop around the
central galaxy (or the central `crop_fraction`) resized to S = `image_size`. JPEGs are downscaled
by the decoder itself (libjpeg-turbo through simplejpeg, at the scale PIL's draft mode picks) when
the target is much smaller than the image, which is most of the cost saved on survey cutouts.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from galaxymorph.config import CHANNELS, MAX_PIXELS, MIN_IMAGE_SIZE, Preprocessing
from galaxymorph.errors import ImageReadError
from galaxymorph.preprocess.framing import frame_box, using_reference

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp") + FITS_SUFFIXES
_FITS_MAGIC = b"SIMPLE  ="
_JPEG_MAGIC = b"\xff\xd8\xff"
_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
_FITS_BITPIX = (8, 16, 32, 64, -32, -64)
_JPEG_MIN_BITS_PER_BLOCK = 1
"""Every 8x8 block of a JPEG's first component costs at least one bit (its DC code), so a file with
fewer bytes than that cannot hold the pixels its header claims: its decoder would fill them in."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has an image or FITS suffix (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class ModelInput:
    """A decoded, framed image; `galaxy_found` (a central galaxy was found) and `galaxy_truncated`
    (it runs off the image, which is then classified whole) are None when framing is off."""

    pixels: np.ndarray
    galaxy_found: bool | None
    galaxy_truncated: bool | None = None


def load_image(path: str | os.PathLike, preprocessing: Preprocessing = Preprocessing()) -> np.ndarray:
    """Read one image file and return the model input, float32 (3, S, S) in [0, 1].

    Raises `ImageReadError` naming the file when it is missing, empty, corrupt, truncated, too
    small or of a shape that is not an image.
    """
    return read_model_input(path, preprocessing).pixels


def read_model_input(path: str | os.PathLike, preprocessing: Preprocessing = Preprocessing(), *,
                     max_pixels: int = MAX_PIXELS) -> ModelInput:
    """`load_image`, also saying whether framing found a central galaxy. Images of more than
    `max_pixels` pixels are refused from their header, before their pixels are read."""
    path = Path(path)
    with _read_errors_named(path):
        if path.stat().st_size == 0:
            raise ImageReadError(path, "file is empty")
        if _is_fits(path):
            return _frame_float(_read_fits(path, preprocessing, max_pixels=max_pixels), preprocessing)
        return _load_pil(path, preprocessing, max_pixels=max_pixels)


def read_jpeg_pixels(path: str | os.PathLike, preprocessing: Preprocessing = Preprocessing(), *,
                     max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The 8-bit RGB pixels (H, W, 3) of a JPEG decoded at the reduced scale that `read_model_input`
    frames, for framing elsewhere (`preprocess.batched`); None for a file that only
    `read_model_input` reads (not a JPEG, named or written as FITS, or one that simplejpeg leaves to PIL)."""
    path = Path(path)
    with _read_errors_named(path):
        if path.stat().st_size == 0:
            raise ImageReadError(path, "file is empty")
        return None if _is_fits(path) else _decode_jpeg_reduced(path, preprocessing, None, max_pixels)


def decode_bytes(data: bytes, name: str, preprocessing: Preprocessing = Preprocessing(), *,
                 max_pixels: int = MAX_PIXELS) -> ModelInput:
    """`read_model_input` for a file held in memory (an upload); `name` labels the errors."""
    if not data:
        raise ImageReadError(name, "file is empty")
    with _read_errors_named(name):
        if data.startswith(_FITS_MAGIC):
            return _frame_float(_read_fits(name, preprocessing, io.BytesIO(data), max_pixels), preprocessing)
        return _load_pil(name, preprocessing, io.BytesIO(data), max_pixels)


def decode_array(pixels: np.ndarray, name: str, preprocessing: Preprocessing = Preprocessing()) -> ModelInput:
    """`read_model_input` for an image held as an array (a row of an HDF5 file): uint8 (H, W, 3)
    RGB or (H, W) grey, or floating point in [0, 1]; `name` labels the errors."""
    pixels = np.asarray(pixels)
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != CHANNELS):
        raise ImageReadError(name, f"array of shape {pixels.shape} is not an (H, W, 3) or (H, W) image")
    _check_size(name, pixels.shape[1], pixels.shape[0])
    if pixels.dtype == np.uint8:
        return _frame_rgb(np.repeat(pixels[..., None], CHANNELS, 2) if pixels.ndim == 2 else pixels, preprocessing)
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ImageReadError(name, f"array of {pixels.dtype}: expected uint8 or floating point in [0, 1]")
    bands = np.nan_to_num(pixels.astype(np.float32)).clip(0.0, 1.0)
    return _frame_float(np.repeat(bands[None], CHANNELS, 0) if bands.ndim == 2 else bands.transpose(2, 0, 1), preprocessing)


@contextmanager
def _read_errors_named(source: object) -> Iterator[None]:
    """Turn whatever the readers raise into an `ImageReadError` naming `source`."""
    try:
        yield
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(source, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(source, "is a directory, not an image file") from None
    except UnidentifiedImageError:
        raise ImageReadError(source, "not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(source, f"image is far too large ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageReadError(source, f"corrupt or truncated image ({exc})") from exc
    except Exception as exc:  # a reader's own bug on a hostile file ends this file, never the job
        raise ImageReadError.unexpected(source, exc) from exc


def _check_pixels(path: object, width: int, height: int, max_pixels: int, values: int | None = None) -> None:
    """Refuse images of more than `max_pixels` pixels, or of more than 3 values a pixel (bands)."""
    if width * height > max_pixels:
        raise ImageReadError(path, f"image is {width}x{height} px, more than the {max_pixels:,} pixels allowed "
                                   "(--max-pixels)")
    if values is not None and values > CHANNELS * max(width * height, 1):
        raise ImageReadError(path, f"image of {width}x{height} px holds {values:,} values: more than {CHANNELS} bands")


def _is_fits(path: Path) -> bool:
    if path.name.lower().endswith(FITS_SUFFIXES):
        return True
    with open(path, "rb") as handle:
        return handle.read(len(_FITS_MAGIC)) == _FITS_MAGIC


def _load_pil(path: Path | str, preprocessing: Preprocessing, source: io.BytesIO | None = None,
              max_pixels: int = MAX_PIXELS) -> ModelInput:
    reduced = _decode_jpeg_reduced(path, preprocessing, source, max_pixels)
    if reduced is not None:
        return _frame_rgb(reduced, preprocessing)
    with warnings.catch_warnings():  # PIL's own decompression-bomb warning: the size is checked here
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(source or path)
    with image:
        _check_pixels(path, image.width, image.height, max_pixels)
        if image.format == "JPEG":
            _check_jpeg_holds_its_pixels(path, image.width, image.height, _byte_count(path, source))
            image.draft("RGB", (decoded_side(preprocessing),) * 2)
        image.load()
        _check_size(path, image.width, image.height)
        if image.mode in _16_BIT_MODES or image.mode == "F":
            grey = _finite_grey(path, np.array(image, dtype=np.float32))
            grey /= 65535.0 if image.mode != "F" else max(float(grey.max()), 1e-12)
            return _frame_float(np.broadcast_to(grey, (CHANNELS, *grey.shape)), preprocessing)
        return _frame_rgb(np.asarray(image.convert("RGB")), preprocessing)


def _decode_jpeg_reduced(path: Path | str, preprocessing: Preprocessing, source: io.BytesIO | None,
                         max_pixels: int) -> np.ndarray | None:
    """A colour or grey JPEG decoded by libjpeg-turbo through simplejpeg, at the scale PIL's draft
    mode picks: the same pixels as PIL, in about 0.7 of its time (benchmarks/framing_speed.py).
    None for any other file, for multi-picture (MPO) files, which PIL reads whole, and for a JPEG
    that simplejpeg refuses (truncated, CMYK...): PIL then reads it and says what is wrong."""
    import simplejpeg

    if source is not None:
        data = source.getvalue()
    else:
        with open(path, "rb") as handle:
            data = handle.read(len(_JPEG_MAGIC))
            if data == _JPEG_MAGIC:
                data += handle.read()
    if not data.startswith(_JPEG_MAGIC) or _is_multi_picture(data):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "Gray"):
        return None
    _check_pixels(path, width, height, max_pixels)
    _check_jpeg_holds_its_pixels(path, width, height, len(data))
    wanted = decoded_side(preprocessing)
    scale = next((s for s in (8, 4, 2) if min(width // wanted, height // wanted) >= s), 1)  # as PIL's draft chooses
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-height // scale),
                                        min_width=-(-width // scale), min_factor=scale)
    except ValueError:
        return None
    _check_size(path, pixels.shape[1], pixels.shape[0])
    return pixels


def _is_multi_picture(data: bytes) -> bool:
    """Whether a JPEG's header segments, before its image data, hold an MPF (multi-picture) APP2 segment."""
    at = 2
    while at + 8 <= len(data) and data[at] == 0xFF and data[at + 1] != 0xDA:  # up to the start of scan
        if data[at + 1] == 0xE2 and data[at + 4:at + 8] == b"MPF\x00":
            return True
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return False


def decoded_side(preprocessing: Preprocessing) -> int:
    """JPEGs are decoded at the smallest scale of 1/2, 1/4 or 1/8 that still covers this side."""
    return math.ceil(preprocessing.image_size / preprocessing.crop_fraction)


def _byte_count(path: Path | str, source: io.BytesIO | None) -> int:
    return source.getbuffer().nbytes if source is not None else os.stat(path).st_size


def _check_jpeg_holds_its_pixels(path: Path | str, width: int, height: int, size: int) -> None:
    """Refuse a JPEG too small for the pixels its header claims, which the decoder would make up."""
    blocks = math.ceil(width / 8) * math.ceil(height / 8)
    if size * 8 < blocks * _JPEG_MIN_BITS_PER_BLOCK:
        raise ImageReadError(path, f"JPEG of {size:,} bytes cannot hold the {width}x{height} px its header "
                                   "claims (truncated or forged)")


def _finite_grey(path: Path | str, pixels: np.ndarray) -> np.ndarray:
    """A one-band image with its NaN and infinite pixels (masked or missing) set to the median of
    the others, as FITS images are; an image with none finite is refused."""
    finite = np.isfinite(pixels)
    if finite.all():
        return pixels
    if not finite.any():
        raise ImageReadError(path, "image has no finite pixels")
    return np.where(finite, pixels, np.median(pixels[finite])).astype(np.float32)


def _check_size(path: Path, width: int, height: int) -> None:
    if min(width, height) < MIN_IMAGE_SIZE:
        raise ImageReadError(path, f"image is {width}x{height} px; at least {MIN_IMAGE_SIZE} px a side is needed")


def _frame_rgb(pixels: np.ndarray, preprocessing: Preprocessing) -> ModelInput:
    """Frame an 8-bit RGB image (H, W, 3): search its grey levels (PIL's "L") for the central
    galaxy, then resample the crop box in floating point (compiled; `_reference_frame_rgb` is the
    same with PIL and numpy).

    Resampling in floating point (one rounding, none between the horizontal and vertical passes)
    keeps the framing exactly equivariant under 90-degree rotations and mirror flips.
    """
    if using_reference():
        return _reference_frame_rgb(Image.fromarray(pixels), preprocessing)
    from galaxymorph.preprocess import compiled

    height, width = pixels.shape[:2]
    grey = compiled.grey_levels(pixels) if preprocessing.framing else None  # searched only when framing

    def reduced_intensity(window: tuple[int, int, int], factor: int) -> np.ndarray:
        return compiled.reduced_levels(grey, *window, factor)

    box, found, truncated = frame_box(width, height, preprocessing, reduced_intensity)
    region, box = _resampled_region(box, width, height, preprocessing.image_size)
    return ModelInput(compiled.resample_region(pixels, region, box, preprocessing.image_size), found, truncated)


def _resampled_region(box: tuple[float, float, float, float], width: int, height: int,
                      size: int) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]]:
    """The pixels the resampling filter reaches around the crop box, and the box relative to them."""
    left, top, right, bottom = box
    margin = 2 + math.ceil((right - left) / size)  # the resampling filter's reach
    region = (max(0, math.floor(left) - margin), max(0, math.floor(top) - margin),
              min(width, math.ceil(right) + margin), min(height, math.ceil(bottom) + margin))
    return region, (left - region[0], top - region[1], right - region[0], bottom - region[1])


def _reference_frame_rgb(image: Image.Image, preprocessing: Preprocessing) -> ModelInput:
    """`_frame_rgb` with PIL's grey conversion and reduction and the numpy resampling."""
    intensity = image.convert("L") if preprocessing.framing else None

    def reduced_intensity(window: tuple[int, int, int], factor: int) -> np.ndarray:
        left, top, side = window
        grey = intensity.crop((left, top, left + side, top + side))
        return np.asarray(grey.reduce(factor) if factor > 1 else grey, dtype=np.float32) / 255.0

    box, found, truncated = frame_box(image.width, image.height, preprocessing, reduced_intensity)
    region, box = _resampled_region(box, image.width, image.height, preprocessing.image_size)
    pixels = np.asarray(image.crop(region), dtype=np.float32).transpose(2, 0, 1) / 255.0
    return ModelInput(reference_resample_bands(pixels, box, preprocessing.image_size), found, truncated)


_STRIP_PIXELS = 1 << 20


def _frame_float(bands: np.ndarray, preprocessing: Preprocessing) -> ModelInput:
    """Crop and resize a (3, H, W) float array in [0, 1]."""
    height, width = bands.shape[1:]

    def reduced_intensity(window: tuple[int, int, int], factor: int) -> np.ndarray:
        left, top, side = window
        cells = side // factor
        strip = max(1, _STRIP_PIXELS // (side * factor))  # rows of cells at a time: a large image needs no float64 copy

        def reduced(first: int) -> np.ndarray:
            rows = slice(top + first * factor, top + min(first + strip, cells) * factor)
            intensity = bands[:, rows, left:left + side].mean(axis=0, dtype=np.float64)
            return intensity.reshape(-1, factor, cells, factor).mean(axis=(1, 3))

        return np.concatenate([reduced(first) for first in range(0, cells, strip)])

    box, found, truncated = frame_box(width, height, preprocessing, reduced_intensity)
    return ModelInput(_resample_bands(bands, box, preprocessing.image_size), found, truncated)


def _resample_bands(bands: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The square `box` of (C, H, W) bands resampled to (C, size, size) float32 in [0, 1] (compiled;
    `reference_resample_bands` is the same in numpy). Only the region the filter reaches is copied."""
    if using_reference():
        return reference_resample_bands(bands, box, size)
    from galaxymorph.preprocess import compiled

    (left, top, right, bottom), box = _resampled_region(box, bands.shape[2], bands.shape[1], size)
    region = np.ascontiguousarray(bands[:, top:bottom, left:right], dtype=np.float64)
    return compiled.resample_bands(region, tuple(float(edge) for edge in box), size)


def reference_resample_bands(bands: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The square `box` of (C, H, W) bands resampled to (C, size, size) float32 in [0, 1].

    The filter is PIL's antialiased bilinear resize, applied in float64 so that the result, rounded
    once to float32, is the same bits whichever axis goes first: framing a turned or mirrored
    image gives exactly the turned or mirrored input (an int8 model amplifies the last bit).
    """
    left, top, right, bottom = box
    rows, row_weights = reference_filter_taps(top, bottom, bands.shape[1], size)
    columns, column_weights = reference_filter_taps(left, right, bands.shape[2], size)
    first, last = int(columns.min()), int(columns.max()) + 1  # only the columns the box needs, a band at a time
    framed = np.stack([np.einsum("ikw,ik->iw", band[rows, first:last], row_weights) for band in bands])
    framed = np.einsum("cijk,jk->cij", framed[:, :, columns - first], column_weights)
    return np.clip(framed, 0.0, 1.0).astype(np.float32)


def reference_filter_taps(start: float, stop: float, length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices and weights, both (size, taps), that resample the pixels between `start` and
    `stop` of an axis to `size` pixels as PIL's BILINEAR resize does: a triangle filter widened by
    the reduction factor (antialiasing), cut to the axis and normalised to sum to 1."""
    scale = (stop - start) / size
    widening = max(scale, 1.0)
    centres = start + (np.arange(size) + 0.5) * scale
    first = np.clip(np.trunc(centres - widening + 0.5), 0, length).astype(np.int64)
    last = np.clip(np.trunc(centres + widening + 0.5), 0, length)
    pixels = first[:, None] + np.arange(2 * math.ceil(widening) + 1)
    weights = np.clip(1.0 - np.abs((pixels - centres[:, None] + 0.5) / widening), 0.0, None) * (pixels < last[:, None])
    total = weights.sum(axis=1, keepdims=True)
    return np.minimum(pixels, length - 1), weights / np.where(total > 0, total, 1.0)


def _read_fits(path: Path | str, preprocessing: Preprocessing, source: io.BytesIO | None = None,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a single-band image or a 3-band cube and asinh-stretch it to (3, H, W) in [0, 1], the
    right way up: FITS stores the bottom row first, and where a celestial WCS is present the image
    is turned so that north is up and east left, as in the surveys' JPEGs. The first image HDU with
    data is read, after its header's data type and size (every axis; for compressed images, the
    size they decompress to) have been checked."""
    from astropy.io import fits

    with fits.open(source or path, memmap=False) as hdus:
        image_hdu = next((hdu for hdu in hdus if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
                          and _header_int(path, hdu.header, "NAXIS") >= 2), None)
        if image_hdu is None:
            raise ImageReadError(path, "FITS file has no image data")
        header = image_hdu.header
        if header.get("BITPIX") not in _FITS_BITPIX:
            raise ImageReadError(path, f"FITS header BITPIX = {header['BITPIX']} is not a FITS data type")
        axes = sorted((_header_int(path, header, f"NAXIS{axis}") for axis in range(1, header["NAXIS"] + 1)), reverse=True)
        _check_pixels(path, axes[0], axes[1], max_pixels, values=math.prod(axes))
        bands = np.array(image_hdu.data, dtype=np.float32)
    bands = _as_bands(path, np.squeeze(bands) if bands.ndim > 2 else bands)
    bands = _north_up(bands, header)[:, ::-1, :]  # bottom row first -> top row first
    _check_size(path, bands.shape[2], bands.shape[1])
    return _asinh_stretch(path, np.ascontiguousarray(bands), preprocessing)


def _header_int(path: Path | str, header, keyword: str) -> int:
    """A size keyword's value (0 when absent), refusing one that is not a whole number >= 0."""
    value = header.get(keyword, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ImageReadError(path, f"FITS header {keyword} = {value!r} is not a whole number")
    return value


def _north_up(bands: np.ndarray, header) -> np.ndarray:
    """Bands (3, Y, X) in FITS order (Y up), turned so that declination grows with Y and right
    ascension falls with X (north up, east left), where the header has a celestial WCS; as they
    are otherwise (or where the WCS cannot be read)."""
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header).celestial
            if not wcs.has_celestial or wcs.naxis != 2:
                return bands
            matrix = wcs.pixel_scale_matrix  # d(RA, Dec) / d(x, y)
    except (ValueError, KeyError, TypeError):  # a malformed WCS leaves the pixels as stored
        return bands
    if abs(matrix[0, 1]) > abs(matrix[0, 0]):  # right ascension runs along Y: the axes are swapped
        bands, matrix = bands.transpose(0, 2, 1), matrix[:, ::-1]
    if matrix[1, 1] < 0:
        bands = bands[:, ::-1, :]
    if matrix[0, 0] > 0:
        bands = bands[:, :, ::-1]
    return bands


def _as_bands(path: Path, data: np.ndarray) -> np.ndarray:
    if data.ndim == 2:
        return np.repeat(data[None], CHANNELS, axis=0)
    if data.ndim == 3 and data.shape[0] == CHANNELS:
        return data
    if data.ndim == 3 and data.shape[-1] == CHANNELS:
        return np.moveaxis(data, -1, 0)
    raise ImageReadError(path, f"FITS data of shape {data.shape}: expected a 2-D image or a 3-band cube")


def _asinh_stretch(path: Path, bands: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Lupton-style colour-preserving asinh stretch of background-subtracted bands.

    NaNs and infinities (masked or missing pixels) are replaced by the band's background.
    """
    finite = np.isfinite(bands)
    if not finite.any():
        raise ImageReadError(path, "image has no finite pixels")
    stretched = np.empty_like(bands)
    noise = []
    for i, band in enumerate(bands):
        values = band[finite[i]] if finite[i].any() else np.zeros(1, np.float32)
        background = np.median(values)
        noise.append(1.4826 * np.median(np.abs(values - background)))
        stretched[i] = np.where(finite[i], band - background, 0.0)
    softening = preprocessing.fits_softening * max(float(np.median(noise)), 1e-12)
    intensity = np.clip(stretched.mean(axis=0), 0.0, None)
    scaled = np.arcsinh(intensity / softening)
    white = max(float(np.percentile(scaled, preprocessing.fits_white_percentile)), 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(intensity > 0, scaled / white / intensity, 0.0)
    return np.clip(stretched * gain, 0.0, 1.0).astype(np.float32)
