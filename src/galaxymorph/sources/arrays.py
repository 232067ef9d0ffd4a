"""HDF5 files of images in the Galaxy10 layout: `images`, uint8 N x H x W x 3, and optional `ans` labels.

The main process reads only the number of images and the labels; each image is read where it is
decoded (a worker process), from a file handle that process opens once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from galaxymorph.catalog import CatalogRow
from galaxymorph.config import MAX_PIXELS, Preprocessing
from galaxymorph.errors import CatalogError, ImageReadError
from galaxymorph.preprocess.decode import ModelInput, decode_array

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
IMAGES_DATASET = "images"
LABELS_DATASET = "ans"
_open_files: dict[tuple[int, Path], object] = {}


def is_hdf5_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(HDF5_SUFFIXES)


@dataclass(frozen=True)
class ArrayImage:
    """Image `index` of an HDF5 file's `images` dataset."""

    path: Path
    index: int

    def __str__(self) -> str:
        return f"{self.path}[{self.index}]"

    def model_input(self, preprocessing: Preprocessing, max_pixels: int = MAX_PIXELS) -> ModelInput:
        """The image as a model input; `max_pixels` does not apply (the file's array fixes every image's size)."""
        try:
            pixels = _images(self.path)[self.index]
        except (OSError, KeyError, ValueError) as exc:
            raise ImageReadError(self, f"cannot be read from the HDF5 file ({exc})") from exc
        return decode_array(pixels, str(self), preprocessing)


def iter_array_rows(path: str | os.PathLike) -> Iterator[CatalogRow]:
    """One row per image of an HDF5 file; the output keeps its `index` and, when present, `ans`."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            images = handle[IMAGES_DATASET]
            if not isinstance(images, h5py.Dataset):
                raise CatalogError(f"HDF5 file {path}: {IMAGES_DATASET!r} is a {type(images).__name__}, not an array of images")
            if images.ndim not in (3, 4):
                raise CatalogError(f"HDF5 file {path}: {IMAGES_DATASET!r} has shape {images.shape}; "
                                   "expected N x H x W x 3 (or N x H x W)")
            count = len(images)
            labels = handle[LABELS_DATASET][()].tolist() if LABELS_DATASET in handle else None
    except KeyError:
        raise CatalogError(f"HDF5 file {path}: has no {IMAGES_DATASET!r} dataset") from None
    except OSError as exc:
        raise CatalogError(f"HDF5 file {path}: cannot be read ({exc})") from exc
    if labels is not None and len(labels) != count:
        raise CatalogError(f"HDF5 file {path}: {len(labels)} labels in {LABELS_DATASET!r} for {count} images")
    for index in range(count):
        columns = {"index": index} if labels is None else {"index": index, LABELS_DATASET: labels[index]}
        yield CatalogRow(f"{path.stem}-{index}", ArrayImage(path, index), columns=columns)


def _images(path: Path):
    """The `images` dataset from a handle opened once per process (a handle must not cross a fork)."""
    import h5py

    key = (os.getpid(), path)
    if key not in _open_files:
        _open_files[key] = h5py.File(path, "r")
    return _open_files[key][IMAGES_DATASET]
