"""Catalogs: tables with an id and a file column (CSV, Parquet or FITS), with or without labels.

Zoobot's column names (`id_str`, `file_loc`) are accepted as aliases, so its users can bring their
catalogs unchanged. File paths are relative to the catalog's folder unless absolute.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from galaxymorph.errors import CatalogError
from galaxymorph.labels import BINARY_CLASSES

ID_COLUMNS = ("id", "id_str", "objid")
FILE_COLUMNS = ("file", "file_loc")
LABEL_COLUMNS = ("label", "gz1_class")
CATALOG_SUFFIXES = (".csv", ".parquet", ".pq")
_FITS_TABLE_SUFFIXES = (".fits", ".fit", ".fits.gz")


def is_catalog_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(CATALOG_SUFFIXES)


def read_catalog(path: str | os.PathLike) -> pa.Table:
    """Read a whole CSV, Parquet or FITS table; raises `CatalogError` naming the file."""
    return pa.Table.from_batches(list(iter_catalog_batches(path)))


def iter_catalog_batches(path: str | os.PathLike, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Stream a catalog in record batches, so that large catalogs never sit whole in memory."""
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise CatalogError(f"catalog {path}: file not found")
    try:
        if name.endswith(".csv"):
            from pyarrow import csv

            reader = csv.open_csv(path, read_options=csv.ReadOptions(block_size=1 << 20))
            batches = iter(reader)
        elif name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        elif name.endswith(_FITS_TABLE_SUFFIXES):
            from astropy.table import Table

            table = Table.read(path, format="fits")
            batches = iter(pa.Table.from_pydict({c: table[c].tolist() for c in table.colnames}).to_batches())
        else:
            raise CatalogError(f"catalog {path}: unsupported format (expected .csv, .parquet or .fits)")
        yielded = False
        for batch in batches:
            yielded = True
            yield batch
        if not yielded:
            raise CatalogError(f"catalog {path}: has no rows")
    except CatalogError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CatalogError(f"catalog {path}: cannot be read ({exc})") from exc


def find_column(names: Sequence[str], candidates: Sequence[str], *, path: object, required: bool = True) -> str | None:
    """The first of `candidates` present in `names`; a `CatalogError` when required and absent."""
    for candidate in candidates:
        if candidate in names:
            return candidate
    if required:
        raise CatalogError(f"catalog {path}: needs a column named {' or '.join(repr(c) for c in candidates)}; "
                           f"it has {', '.join(names)}")
    return None


@dataclass(frozen=True)
class CatalogRow:
    """One image to classify: its id and file, or why the row is unusable."""

    id: str
    file: Path
    error: str = ""


def iter_catalog_rows(path: str | os.PathLike) -> Iterator[CatalogRow]:
    """Stream (id, file) rows of a catalog; files are resolved relative to the catalog's folder."""
    path = Path(path)
    for batch in iter_catalog_batches(path):
        names = batch.schema.names
        file_column = find_column(names, FILE_COLUMNS, path=path)
        id_column = find_column(names, ID_COLUMNS, path=path, required=False)
        files = batch.column(file_column).to_pylist()
        ids = batch.column(id_column).to_pylist() if id_column else [None] * len(files)
        for row_id, file in zip(ids, files):
            resolved = path.parent / str(file or "")
            yield CatalogRow(str(row_id) if row_id is not None else Path(str(file)).stem, resolved)


@dataclass(frozen=True)
class LabelledCatalog:
    """Images with their labels, as training and evaluation use them."""

    ids: list[str]
    files: list[Path]
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: Sequence[int]) -> LabelledCatalog:
        return LabelledCatalog([self.ids[i] for i in keep], [self.files[i] for i in keep],
                               [self.labels[i] for i in keep], self.source)


def read_labelled_catalog(path: str | os.PathLike) -> LabelledCatalog:
    """Read the gz1-sdss layout (`objid,file,gz1_class`) or a generic `file,label` table.

    Generic 0/1 labels take the seed's meaning: 0 elliptical, 1 spiral.
    """
    path = Path(path)
    table = read_catalog(path)
    names = table.schema.names
    label_column = find_column(names, LABEL_COLUMNS, path=path)
    rows = list(iter_catalog_rows(path))
    labels = [_normalise_label(value) for value in table.column(label_column).to_pylist()]
    missing = [i + 1 for i, label in enumerate(labels) if label == ""]
    if missing:
        raise CatalogError(f"catalog {path}: empty {label_column!r} in row(s) {missing[:10]}")
    return LabelledCatalog([r.id for r in rows], [r.file for r in rows], labels, str(path))


def _normalise_label(value: object) -> str:
    text = "" if value is None else str(value).strip()
    return {"0": BINARY_CLASSES[0], "1": BINARY_CLASSES[1]}.get(text, text)
