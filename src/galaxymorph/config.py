"""Settings of the design, in one place.

The constants below are the starting design's numbers (64x64x3 input, batch size...) and the
defaults of the preprocessing that travels with every checkpoint. Environment variables are read
here and only here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

IMAGE_SIZE = 64
"""Side of the square model input, in pixels."""

CHANNELS = 3
"""Colour channels of the model input (gri composites, or a single band repeated)."""

CROP_FRACTION = 0.4
"""Fraction of the cutout's side kept around the centre before resizing.

SDSS cutouts of 423 px show the galaxy in the central 10-30% of the frame; keeping the central
40% makes the galaxy fill a useful part of the 64 px input."""

MIN_IMAGE_SIZE = 8
"""Images with a side shorter than this are refused: nothing can be learnt from them."""

MAX_PIXELS = 25_000_000
"""Images of more pixels (5000 x 5000) are refused from their header, before their pixels are read,
so that one file cannot take a decoding process's memory (`--max-pixels` raises it). Survey
cutouts are far smaller: 424 x 424 px by default, 3000 x 3000 at most from `fetch`."""

BATCH_SIZE = 128
DEFAULT_MODEL = "galaxynet_ensemble"
"""Name of the bundled pretrained model that `classify` uses by default."""

THUMBNAIL_SIZE = 128
"""Side in px of the galaxy thumbnails of reports and of the service's similarity search."""
CHUNK_ROWS = 10_000
"""Rows per Parquet chunk of an output dataset folder (the unit that `--resume` keeps)."""
CALIBRATION_IMAGES = 256
"""Training images whose activations set the ranges of a model's int8 graph (`galaxymorph quantize`)."""

CONFIDENT_MARGIN = 0.4
"""A prediction is `confident` when p_spiral is at least this far from 0.5 (p_spiral <= 0.1 or >= 0.9), both as
calibrated and as it would be for a sample with as many spirals as ellipticals (where the model records the share
of spirals it was calibrated on), so that `confident` holds for samples richer in spirals than Galaxy Zoo's."""

CONFIDENT_MAX_STD = 0.1
"""... and, where p_spiral_std is measured (an ensemble, or test-time augmentation), when it is at most this."""

CONFIDENT_MIN_GALAXY = 0.9
"""... and when p_galaxy, the model's probability that the object is an elliptical or a disk at all, is at least this
(and, where the model has a feature density, when ood_score is within its limit)."""

LABEL_MIN_GALAXY = 0.5
"""`label` is elliptical or spiral only where p_galaxy is at least this; else `uncertain` (the model puts most of its
probability on merger or don't-know)."""

SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
"""Train, validation and test shares of a labelled catalog."""

SPLIT_SEED = 20261126


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input; saved in every checkpoint's metadata.

    `fits_softening` is the asinh softening in units of the background noise, and
    `fits_white_percentile` the percentile of the stretched intensity that maps to 1.
    """

    image_size: int = IMAGE_SIZE
    crop_fraction: float = CROP_FRACTION
    fits_softening: float = 5.0
    fits_white_percentile: float = 99.8
    framing: bool = True
    """Find the central galaxy and crop around it so that twice its half-light radius spans
    `frame_fill` of the model input; `crop_fraction` is the fallback where none is found."""
    frame_fill: float = 0.35

    def __post_init__(self) -> None:
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {self.image_size}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if not 0.0 < self.frame_fill <= 1.0:
            raise ValueError(f"frame_fill must be in (0, 1], got {self.frame_fill}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def default_workers(workers: int | None = None) -> int:
    """Processes for decoding (and Dask workers): `workers` when given, else one per core. The one
    place this default lives."""
    return (os.cpu_count() or 1) if workers is None else workers


def astro_db_host() -> str | None:
    """`ASTRO_DB_HOST`: a host name, or a full `scheme://host:port` URL, that replaces the cutout
    services' default host (a mirror, or a local server)."""
    return os.environ.get("ASTRO_DB_HOST") or None


def sdss_api_key() -> str | None:
    """`SDSS_API_KEY`: the credential sent to the SDSS cutout service, when set."""
    return os.environ.get("SDSS_API_KEY") or None


def service_api_key() -> str | None:
    """`GALAXYMORPH_API_KEY`: when set, the web service's POST endpoints require it."""
    return os.environ.get("GALAXYMORPH_API_KEY") or None


def cache_dir() -> Path:
    """Where decoded training sets are cached (`GALAXYMORPH_CACHE_DIR`, else ~/.cache/galaxymorph)."""
    configured = os.environ.get("GALAXYMORPH_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "galaxymorph"
