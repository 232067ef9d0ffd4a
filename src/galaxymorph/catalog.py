"""Catalogs: tables with an id and a file column (CSV, Parquet, FITS or ECSV), with or without labels.

Zoobot's column names (`id_str`, `file_loc`) are accepted as aliases, so its users can bring their
catalogs unchanged. File paths are relative to the catalog's folder unless absolute.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from galaxymorph.errors import CatalogError
from galaxymorph.labels import BINARY_CLASSES

ID_COLUMNS = ("id", "id_str", "objid")
FILE_COLUMNS = ("file", "file_loc")
LABEL_COLUMNS = ("label", "gz1_class")
RA_COLUMNS = ("ra", "RAJ2000", "RA_ICRS", "RAdeg")
DEC_COLUMNS = ("dec", "DEJ2000", "DE_ICRS", "DEdeg")
"""Position columns found without options, in any case: the usual names and VizieR's."""
CATALOG_SUFFIXES = (".csv", ".parquet", ".pq", ".ecsv")
_ASTROPY_TABLE_SUFFIXES = (".fits", ".fit", ".fits.gz", ".ecsv")


def is_catalog_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(CATALOG_SUFFIXES)


def _open_csv_as_text(path: Path):
    """A streaming reader of a CSV catalog whose every column is read as text, so that the output
    gives the catalog's own values back byte for byte (202.469575 stays 202.469575); empty cells
    are nulls."""
    from pyarrow import csv

    return csv.open_csv(path, read_options=csv.ReadOptions(block_size=1 << 20),
                        convert_options=csv.ConvertOptions(column_types={name: pa.string() for name in _csv_header(path)},
                                                           strings_can_be_null=True))


def _csv_header(path: Path) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])


@dataclass(frozen=True)
class BadLine:
    """A catalog line that cannot be read (a CSV line with too many or too few fields, say): it
    becomes one error row in its place, and the lines around it are read as usual."""

    number: int
    reason: str


def iter_catalog_records(path: str | os.PathLike, batch_rows: int = 10_000) -> Iterator[tuple[list[str], list]]:
    """Stream a catalog as (column names, records) in batches: each record a dict of its columns, or
    a `BadLine`. CSV cells are text, as written (empty ones None), read line by line so that one
    malformed line costs only itself."""
    path = Path(path)
    if not path.name.lower().endswith(".csv"):
        for batch in iter_catalog_batches(path, batch_rows):
            yield batch.schema.names, batch.to_pylist()
        return
    import csv

    if not path.is_file():
        raise CatalogError(f"catalog {path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            names = next(reader, None)
            if not names:
                raise CatalogError(f"catalog {path}: has no header line")
            records, yielded = [], False
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    records.append(BadLine(reader.line_num, f"line {reader.line_num}: {exc}"))
                    continue
                if not fields:  # a blank line
                    continue
                if len(fields) != len(names):
                    records.append(BadLine(reader.line_num, f"line {reader.line_num} has {len(fields)} fields; "
                                                            f"the header has {len(names)}"))
                else:
                    records.append({name: value if value != "" else None for name, value in zip(names, fields)})
                if len(records) >= batch_rows:
                    yield names, records
                    records, yielded = [], True
            if records:
                yield names, records
            elif not yielded:
                raise CatalogError(f"catalog {path}: has no rows")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"catalog {path}: is not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise CatalogError(f"catalog {path}: cannot be read ({exc})") from exc


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
            batches = iter(_open_csv_as_text(path))
        elif name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        elif name.endswith(_ASTROPY_TABLE_SUFFIXES):
            from astropy.table import Table

            table = Table.read(path, format="ascii.ecsv" if name.endswith(".ecsv") else "fits")
            batches = iter(pa.Table.from_pydict({c: table[c].tolist() for c in table.colnames}).to_batches())
        else:
            raise CatalogError(f"catalog {path}: unsupported format (expected .csv, .parquet, .fits or .ecsv)")
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


def count_catalog_rows(path: str | os.PathLike) -> int | None:
    """A catalog's number of rows (a Parquet file's from its footer, others by reading it), or
    None when it cannot be read: the caller reports that when it reads the rows."""
    try:
        if str(path).lower().endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        return sum(len(records) for _, records in iter_catalog_records(path))
    except (CatalogError, pa.ArrowException, OSError):
        return None


def position_columns(names: Sequence[str], ra_column: str = "ra", dec_column: str = "dec", *,
                     path: object) -> tuple[str, str]:
    """The catalog's right ascension and declination columns: the ones named, or for the default
    names any of `RA_COLUMNS`/`DEC_COLUMNS` in any case; a `CatalogError` naming them when absent."""
    lowered = {name.lower(): name for name in names}

    def resolve(column: str, aliases: Sequence[str]) -> str:
        if column in names:
            return column
        candidates = aliases if column == aliases[0] else (column,)
        found = next((lowered[c.lower()] for c in candidates if c.lower() in lowered), None)
        return found or find_column(names, candidates, path=path)  # absent: find_column raises, naming them

    return resolve(ra_column, RA_COLUMNS), resolve(dec_column, DEC_COLUMNS)


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
    """One image to classify: its id and file, or why the row is unusable; `columns` are input
    columns that the output keeps (a catalog of positions' own columns, say)."""

    id: str
    file: Path | None
    error: str = ""
    columns: dict = field(default_factory=dict)


def iter_catalog_rows(path: str | os.PathLike) -> Iterator[CatalogRow]:
    """Stream (id, file) rows of a catalog, with all its columns (which the output keeps); files are
    resolved relative to the catalog's folder. A line that cannot be read is a row with its reason."""
    path = Path(path)
    for names, records in iter_catalog_records(path):
        if not set(FILE_COLUMNS) & set(names) and _has_positions(names):
            raise CatalogError(f"catalog {path}: has sky positions (ra, dec) but no image files; fetch their "
                               "cutouts with `galaxymorph classify --fetch` or `galaxymorph fetch`")
        file_column = find_column(names, FILE_COLUMNS, path=path)
        id_column = find_column(names, ID_COLUMNS, path=path, required=False)
        for record in records:
            if isinstance(record, BadLine):
                yield CatalogRow(f"line {record.number}", None, f"catalog {path}: {record.reason}")
            else:
                yield catalog_row(record, folder=path.parent, file_column=file_column, id_column=id_column)


def _has_positions(names: Sequence[str]) -> bool:
    try:
        position_columns(names, path="")
    except CatalogError:
        return False
    return True


def catalog_row(columns: dict, *, folder: str | os.PathLike, file_column: str, id_column: str | None) -> CatalogRow:
    """The image row of one catalog record: its file relative to `folder`, its id (the file's stem
    when there is no id), and all its columns. A record without a file is unusable, with the reason
    its own `error` column gives (a fetch manifest's failed download) or that it has none."""
    row_id, file = columns[id_column] if id_column else None, columns[file_column]
    if file is None or str(file) == "":
        reason = columns.get("error") or f"no file in column {file_column!r}"
        return CatalogRow(str(row_id) if row_id is not None else "", None, str(reason), columns)
    return CatalogRow(str(row_id) if row_id is not None else Path(str(file)).stem, Path(folder) / str(file), columns=columns)


@dataclass(frozen=True)
class SkyPosition:
    """One row of a catalog of sky positions (degrees, ICRS), with all its columns, or why it is unusable."""

    id: str
    ra: float
    dec: float
    columns: dict
    error: str = ""


def iter_sky_positions(path: str | os.PathLike, *, ra_column: str = "ra", dec_column: str = "dec",
                       id_column: str | None = None) -> Iterator[SkyPosition]:
    """Stream the positions of a catalog. Coordinates are degrees, or sexagesimal text
    ("10:21:03.6", "+05:12:40"; right ascension in hours). A row with a missing or impossible
    coordinate gets its reason in `error`; without an id column, the id is the row number."""
    path = Path(path)
    number = 0
    for names, records in iter_catalog_records(path):
        ra_name, dec_name = position_columns(names, ra_column, dec_column, path=path)
        id_name = find_column(names, [id_column] if id_column else ID_COLUMNS, path=path, required=id_column is not None)
        for columns in records:
            number += 1
            if isinstance(columns, BadLine):
                yield SkyPosition(f"line {columns.number}", math.nan, math.nan, {}, f"catalog {path}: {columns.reason}")
                continue
            row_id = str(columns[id_name]) if id_name and columns[id_name] is not None else str(number)
            yield sky_position(columns, row_id=row_id, ra_column=ra_name, dec_column=dec_name, row_name=f"row {number}")


def sky_position(columns: dict, *, row_id: str, ra_column: str = "ra", dec_column: str = "dec",
                 row_name: str = "") -> SkyPosition:
    """The position of one catalog row (its `columns`); an unusable one carries the reason,
    prefixed by `row_name`."""
    try:
        ra, dec = _degrees(columns[ra_column], columns[dec_column])
    except ValueError as exc:
        return SkyPosition(row_id, math.nan, math.nan, columns, f"{row_name or row_id}: {exc}")
    return SkyPosition(row_id, ra, dec, columns)


def _degrees(ra: object, dec: object) -> tuple[float, float]:
    if isinstance(ra, str) or isinstance(dec, str):
        from astropy import units
        from astropy.coordinates import Angle

        try:
            ra = Angle(ra, unit=units.hourangle if ":" in str(ra) or " " in str(ra).strip() else units.deg).degree
            dec = Angle(dec, unit=units.deg).degree
        except (ValueError, TypeError) as exc:
            raise ValueError(f"coordinates ({ra!r}, {dec!r}) are not readable angles") from exc
    if ra is None or dec is None:
        raise ValueError("ra or dec is empty")
    return sky_position_degrees(float(ra), float(dec))


def sky_position_degrees(ra: float, dec: float) -> tuple[float, float]:
    """(ra, dec) in degrees checked as a sky position (finite, |dec| <= 90), ra wrapped into [0, 360);
    a `ValueError` otherwise."""
    if not (math.isfinite(ra) and math.isfinite(dec)) or not -90.0 <= dec <= 90.0:
        raise ValueError(f"({ra}, {dec}) is not a sky position in degrees")
    return ra % 360.0, dec


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
