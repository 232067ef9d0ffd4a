"""Turn command-line paths (files, folders, catalogs) into a stream of images to classify."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from galaxymorph.catalog import CatalogRow, count_catalog_rows, is_catalog_file, iter_catalog_rows
from galaxymorph.errors import CatalogError, ImageReadError
from galaxymorph.preprocess import is_image_file
from galaxymorph.sources.arrays import is_hdf5_file, iter_array_rows
from galaxymorph.sources.shards import is_shard_file, iter_shard_rows


def iter_inputs(paths: Iterable[str | os.PathLike]) -> Iterator[CatalogRow]:
    """Yield one row per image: files as given, folders recursively (sorted), catalogs row by row,
    HDF5 arrays image by image, tar shards sample by sample.

    A path that does not exist is still yielded, so that it gets its own error row downstream; a
    catalog, array file or shard that cannot be read becomes one row carrying the reason (after the
    rows read before the problem), and the other paths go on.
    """
    for path in map(Path, paths):
        if path.is_dir():
            yield from _walk_folder(path)
        elif reader := _reader_of(path):
            try:
                yield from reader(path)
            except CatalogError as exc:
                yield CatalogRow(_stem(path), path, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a reader's bug on a hostile file ends that file only
                yield CatalogRow(_stem(path), path, error=str(ImageReadError.unexpected(path, exc)))
        else:
            yield CatalogRow(_stem(path), path)


def count_inputs(paths: Iterable[str | os.PathLike]) -> int | None:
    """How many rows `iter_inputs(paths)` will yield (for a progress bar's total and time left), or
    None where that is not known without reading every image (HDF5 arrays, tar shards, a catalog
    that cannot be read)."""
    total = 0
    for path in map(Path, paths):
        if path.is_dir():
            total += sum(1 for _ in _walk_folder(path))
        elif is_catalog_file(path):
            rows = count_catalog_rows(path)
            if rows is None:
                return None
            total += rows
        elif _reader_of(path):
            return None
        else:
            total += 1
    return total


def _reader_of(path: Path):
    for is_kind, reader in ((is_catalog_file, iter_catalog_rows), (is_hdf5_file, iter_array_rows),
                            (is_shard_file, iter_shard_rows)):
        if is_kind(path):
            return reader
    return None


def _walk_folder(folder: Path) -> Iterator[CatalogRow]:
    for root, directories, files in os.walk(folder):
        directories.sort()
        for name in sorted(files):
            if is_image_file(name):
                yield CatalogRow(_stem(Path(name)), Path(root) / name)


def file_id(path: str | os.PathLike) -> str:
    """The id of a file given without one: its name without the extension (.fits.gz and the like
    count as one), as `classify` and the web service both name rows."""
    return _stem(Path(path))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".fits.gz", ".fit.gz", ".tar.gz", ".tar.bz2", ".tar.xz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
