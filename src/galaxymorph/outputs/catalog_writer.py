"""Write result rows to CSV or Parquet as they arrive, so nothing computed is held back or lost,
or to a FITS binary table or ECSV (through astropy, written whole when the job ends or stops).

Every output describes its columns and records its provenance (`outputs.metadata`): in the table's
metadata, or for CSV in a sidecar `NAME.csv.json`. Survey-sized jobs write a Parquet dataset
instead: a folder of ordered chunks, each written whole, which a killed run resumes from.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from pathlib import Path
from types import TracebackType

import numpy as np

from galaxymorph.config import CHUNK_ROWS
from galaxymorph.outputs.metadata import POSITION_UNITS, column_metadata

OUTPUT_SUFFIXES = (".csv", ".parquet", ".pq", ".fits", ".ecsv")
_ASTROPY_FORMATS = {".fits": "fits", ".ecsv": "ascii.ecsv"}
DATASET_SETTINGS = "_galaxymorph.json"
_CHUNK_NAME = re.compile(r"part-(\d{6})\.parquet")


def check_output_path(path: str | os.PathLike) -> Path:
    """Validate the output's name early, before any work is done: a .csv, .parquet, .fits or .ecsv
    file, or a folder (a name without a suffix) for a Parquet dataset."""
    path = Path(path)
    if not (path.name.lower().endswith(OUTPUT_SUFFIXES) or is_dataset_path(path)):
        raise ValueError("output must end in .csv, .parquet, .fits or .ecsv, or be a folder for a Parquet dataset, "
                         f"got {path.name!r}")
    return path


def is_dataset_path(path: str | os.PathLike) -> bool:
    """A folder, or a name without a suffix, is written as a Parquet dataset."""
    path = Path(path)
    return path.is_dir() or not path.suffix


def open_catalog_writer(path: str | os.PathLike, *, resume: bool = False, chunk_rows: int = CHUNK_ROWS,
                        settings: dict | None = None, provenance: dict | None = None) -> CatalogWriter | DatasetWriter:
    """A `DatasetWriter` for a folder, else a `CatalogWriter`; `resume` needs a folder."""
    path = check_output_path(path)
    if is_dataset_path(path):
        return DatasetWriter(path, chunk_rows=chunk_rows, resume=resume, settings=settings or {}, provenance=provenance)
    if resume:
        raise ValueError(f"resuming needs a Parquet dataset folder as output (a name without a suffix), got {path.name!r}")
    return CatalogWriter(path, provenance=provenance)


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where a CSV catalog's column descriptions and provenance go: NAME.csv.json beside it."""
    return Path(f"{path}.json")


class CatalogWriter:
    """Context manager that appends batches of rows (dicts with the same keys) to a catalog file;
    `provenance` (see `outputs.metadata.provenance`) goes into its metadata or CSV sidecar."""

    def __init__(self, path: str | os.PathLike, *, provenance: dict | None = None) -> None:
        self.path = check_output_path(path)
        self.provenance = provenance
        self._format = next((name for suffix, name in _ASTROPY_FORMATS.items() if self.path.name.lower().endswith(suffix)),
                            "csv" if self.path.name.lower().endswith(".csv") else "parquet")
        self._writer = None
        self._handle = None
        self._held: list[dict] = []  # rows of a FITS or ECSV table, written whole at the end
        self._left_out: set[str] = set()
        self.rows_done = 0  # a single file is never resumed
        self.rows_written = 0

    def __enter__(self) -> CatalogWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._format == "csv":
            self._handle = open(self.path, "w", newline="")
        return self

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        if self._format == "parquet":
            self._write_parquet(rows)
        elif self._format == "csv":
            self._write_csv(rows)
        else:
            self._held.extend(rows)
        self.rows_written += len(rows)

    def _write_csv(self, rows: list[dict]) -> None:
        if self._writer is None:
            self._writer = csv.DictWriter(self._handle, fieldnames=list(rows[0]), extrasaction="ignore")
            self._writer.writeheader()
            if self.provenance is not None:
                columns = {name: column_metadata(name, numeric=False) for name in rows[0]}  # CSV cells are text
                sidecar_path(self.path).write_text(json.dumps({"provenance": self.provenance, "columns": columns}, indent=1))
        _warn_of_new_columns(rows, self._writer.fieldnames, self.path, self._left_out)
        self._writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
        self._handle.flush()

    def _write_parquet(self, rows: list[dict]) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            schema = described_schema(rows_to_table(rows).schema, self.provenance)
            self._writer = pq.ParquetWriter(self.path, schema)
        _warn_of_new_columns(rows, self._writer.schema.names, self.path, self._left_out)
        self._writer.write_table(rows_to_table(rows, self._writer.schema))

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._format == "parquet" and self._writer is not None:
            self._writer.close()
        if self._handle is not None:
            self._handle.close()
        if self._held:  # rows computed before an error or an interrupt are kept
            write_astropy_table(rows_to_table(self._held), self.path, self._format, self.provenance)


class DatasetWriter:
    """Context manager that writes rows into a folder of ordered Parquet chunks, `part-000000.parquet`
    and on, each of `chunk_rows` rows (the last one, or the one cut short by an error, fewer).

    A chunk appears whole or not at all (temporary file, fsync, rename), so a killed run leaves only
    whole chunks: with `resume`, `rows_done` says how many input rows they hold and the next chunk
    follows them. `settings` (the model, say) are stored beside the chunks; resuming with others is
    refused. Without `resume`, a folder that already holds chunks is refused.
    """

    def __init__(self, folder: str | os.PathLike, *, chunk_rows: int = CHUNK_ROWS, resume: bool = False,
                 settings: dict | None = None, provenance: dict | None = None) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.path = Path(folder)
        self.chunk_rows = chunk_rows
        self.resume = resume
        self.settings = json.loads(json.dumps(settings or {}))  # as it reads back from the file
        self.provenance = provenance
        self.rows_done = 0
        self.rows_written = 0
        self._chunks = 0
        self._schema = None
        self._buffer: list[dict] = []
        self._left_out: set[str] = set()

    def __enter__(self) -> DatasetWriter:
        import pyarrow.parquet as pq

        self.path.mkdir(parents=True, exist_ok=True)
        for leftover in self.path.glob(".part-*.tmp"):
            leftover.unlink()
        chunks = self._chunk_files()
        if chunks and not self.resume:
            raise ValueError(f"{self.path} already holds result chunks ({len(chunks)}): continue that run with --resume "
                             "(resume=True), or choose an empty folder")
        if chunks:
            try:
                stored = json.loads((self.path / DATASET_SETTINGS).read_text())
            except (OSError, ValueError) as error:
                raise ValueError(f"{self.path}: its settings file {DATASET_SETTINGS} is missing or unreadable ({error}): "
                                 "cannot tell what wrote the chunks, so cannot resume it") from error
            if stored != self.settings:
                there, now = _flattened(stored), _flattened(self.settings)
                changed = "; ".join(f"{key} {there.get(key)!r} there, {now.get(key)!r} now"
                                    for key in sorted(there.keys() | now.keys()) if there.get(key) != now.get(key))
                raise ValueError(f"{self.path} was written with other settings ({changed}): cannot resume it")
            self._schema = described_schema(pq.read_schema(chunks[0]), self.provenance)
            self.rows_done = sum(pq.ParquetFile(chunk).metadata.num_rows for chunk in chunks)
            self._chunks = len(chunks)
        else:
            (self.path / DATASET_SETTINGS).write_text(json.dumps(self.settings, indent=1, sort_keys=True))
        return self

    def write(self, rows: list[dict]) -> None:
        self._buffer.extend(rows)
        while len(self._buffer) >= self.chunk_rows:
            self._write_chunk(self._buffer[:self.chunk_rows])
            del self._buffer[:self.chunk_rows]

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        # Rows computed before an error or an interrupt are kept: resuming starts after them.
        if self._buffer:
            self._write_chunk(self._buffer)
            self._buffer = []

    def _chunk_files(self) -> list[Path]:
        """The chunks in order; they are written one after another, so they have no gaps."""
        numbers = sorted(int(match[1]) for name in os.listdir(self.path) if (match := _CHUNK_NAME.fullmatch(name)))
        if numbers != list(range(len(numbers))):
            raise ValueError(f"{self.path}: result chunks {numbers[:10]}... are not numbered 0, 1, 2...; not a galaxymorph dataset")
        return [self.path / f"part-{number:06d}.parquet" for number in numbers]

    def _write_chunk(self, rows: list[dict]) -> None:
        import pyarrow.parquet as pq

        if self._schema is None:
            self._schema = described_schema(rows_to_table(rows).schema, self.provenance)
        _warn_of_new_columns(rows, self._schema.names, self.path, self._left_out)
        table = rows_to_table(rows, self._schema)
        final = self.path / f"part-{self._chunks:06d}.parquet"
        partial = self.path / f".{final.name}.tmp"
        with open(partial, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(final)
        self._chunks += 1
        self.rows_written += len(rows)


def _warn_of_new_columns(rows: list[dict], columns: list[str], path: Path, left_out: set[str]) -> None:
    """Log once per output that rows bring columns its header (fixed by its first rows) lacks: a
    catalog's own columns after a folder's files, say; `left_out` holds those already logged. FITS
    and ECSV keep every column."""
    new = sorted({key for row in rows for key in row} - set(columns) - left_out)
    if new:
        left_out.update(new)
        logging.getLogger(__name__).warning(
            "%s: columns %s of later inputs are left out (the columns were fixed by the first rows); "
            "classify inputs with different columns into separate catalogs, or write .fits or .ecsv", path, ", ".join(new))


def rows_to_table(rows: list[dict], schema=None):
    """An Arrow table of row dicts (the columns of `schema` when given, else every key in order of
    appearance); built column by column, which is many times faster than row by row."""
    import pyarrow as pa

    names = schema.names if schema is not None else list(dict.fromkeys(key for row in rows for key in row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        vector = next((value for value in values if isinstance(value, np.ndarray)), None)
        # Vectors (embeddings) become fixed-size lists of float32; None stays null.
        columns[name] = values if vector is None else pa.array(values, type=pa.list_(pa.float32(), len(vector)))
    return pa.Table.from_pydict(columns, schema=schema)


def described_schema(schema, provenance: dict | None = None):
    """`schema` with each field's description and unit (`outputs.metadata`) as field metadata and,
    when given, the provenance as JSON under the schema's `galaxymorph` key."""
    import pyarrow as pa

    def described(field: pa.Field) -> pa.Field:
        return field.with_metadata(column_metadata(field.name, pa.types.is_floating(field.type) or pa.types.is_integer(field.type)))

    metadata = {"galaxymorph": json.dumps(provenance)} if provenance is not None else None
    return pa.schema([described(field) for field in schema], metadata=metadata)


def write_astropy_table(table, path: Path, format: str, provenance: dict | None) -> None:
    """Write an Arrow table as FITS or ECSV through astropy, atomically: each column with its
    description and unit, nulls masked (NaN in float columns), the provenance in the metadata (FITS
    header keywords; ECSV's `galaxymorph` entry). FITS strings are ASCII, so text is written as UTF-8 bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from astropy.table import MaskedColumn, Table

    output = Table()
    for field, column in zip(table.schema, table.columns):
        if field.name.lower() in POSITION_UNITS and pa.types.is_string(field.type):
            column = _as_degrees(column)  # a CSV input's positions, read as text
            field = pa.field(field.name, column.type)
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type) or pa.types.is_null(field.type):
            values = ["" if value is None else str(value) for value in column.to_pylist()]
            values = np.array([value.encode() for value in values]) if format == "fits" else np.array(values, dtype=str)
            mask = None
        elif pa.types.is_floating(field.type):
            values, mask = pc.fill_null(column, np.nan).to_numpy(zero_copy_only=False), None
        else:
            mask = column.is_null().to_numpy(zero_copy_only=False)
            filled = pc.fill_null(column, pa.scalar(False if pa.types.is_boolean(field.type) else 0, field.type))
            values = filled.to_numpy(zero_copy_only=False)
        output[field.name] = MaskedColumn(values, mask=mask if mask is not None and mask.any() else None,
                                          **column_metadata(field.name, values.dtype.kind in "fiu"))
    if format == "fits":  # header keywords; TCOMMn (column descriptions) are read by TOPCAT and others
        output.meta.update({f"TCOMM{number}": column.description for number, column in enumerate(output.itercols(), 1)})
        output.meta.update(_fits_keywords(provenance or {}))
    else:
        output.meta["galaxymorph"] = provenance or {}
    partial = path.with_name(f".{path.name}.tmp")
    output.write(partial, format=format, overwrite=True)
    partial.replace(path)


def _as_degrees(column):
    """A text column of positions in decimal degrees as numbers, or as it is where any cell is not one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return column


def _fits_keywords(provenance: dict) -> dict:
    """The provenance as FITS header keywords (long values continue over cards)."""
    names = {"software": "ORIGIN", "version": "SWVERSN", "created": "DATE", "model": "MODEL", "weights_sha256": "WEIGHTS",
             "classes": "CLASSES", "preprocessing": "PREPROC", "tta": "TTA"}
    return {names.get(key, key[:8].upper()): value if isinstance(value, (str, bool, int, float)) else json.dumps(value)
            for key, value in provenance.items()}


def _csv_value(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _flattened(settings: dict, prefix: str = "") -> dict:
    """Nested settings as one level, keys joined by dots (source.pixel_scale)."""
    flat = {}
    for key, value in settings.items():
        flat.update(_flattened(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat
