"""Write result rows to CSV or Parquet as they arrive, so nothing computed is held back or lost.

Survey-sized jobs write a Parquet dataset instead: a folder of ordered chunks, each written whole,
which a killed run resumes from.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from types import TracebackType

OUTPUT_SUFFIXES = (".csv", ".parquet", ".pq")
CHUNK_ROWS = 10_000
DATASET_SETTINGS = "_galaxymorph.json"
_CHUNK_NAME = re.compile(r"part-(\d{6})\.parquet")


def check_output_path(path: str | os.PathLike) -> Path:
    """Validate the output's name early, before any work is done: a .csv or .parquet file, or a
    folder (a name without a suffix) for a Parquet dataset."""
    path = Path(path)
    if not (path.name.lower().endswith(OUTPUT_SUFFIXES) or is_dataset_path(path)):
        raise ValueError(f"output must end in .csv or .parquet, or be a folder for a Parquet dataset, got {path.name!r}")
    return path


def is_dataset_path(path: str | os.PathLike) -> bool:
    """A folder, or a name without a suffix, is written as a Parquet dataset."""
    path = Path(path)
    return path.is_dir() or not path.suffix


def open_catalog_writer(path: str | os.PathLike, *, resume: bool = False, chunk_rows: int = CHUNK_ROWS,
                        settings: dict | None = None) -> CatalogWriter | DatasetWriter:
    """A `DatasetWriter` for a folder, else a `CatalogWriter`; `resume` needs a folder."""
    path = check_output_path(path)
    if is_dataset_path(path):
        return DatasetWriter(path, chunk_rows=chunk_rows, resume=resume, settings=settings or {})
    if resume:
        raise ValueError(f"resuming needs a Parquet dataset folder as output (a name without a suffix), got {path.name!r}")
    return CatalogWriter(path)


class CatalogWriter:
    """Context manager that appends batches of rows (dicts with the same keys) to a catalog file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_output_path(path)
        self._parquet = not self.path.name.lower().endswith(".csv")
        self._writer = None
        self._handle = None
        self.rows_done = 0  # a single file is never resumed
        self.rows_written = 0

    def __enter__(self) -> CatalogWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._parquet:
            self._handle = open(self.path, "w", newline="")
        return self

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        if self._parquet:
            self._write_parquet(rows)
        else:
            if self._writer is None:
                self._writer = csv.DictWriter(self._handle, fieldnames=list(rows[0]))
                self._writer.writeheader()
            self._writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
            self._handle.flush()
        self.rows_written += len(rows)

    def _write_parquet(self, rows: list[dict]) -> None:
        import pyarrow.parquet as pq

        table = rows_to_table(rows, None if self._writer is None else self._writer.schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table)

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._parquet and self._writer is not None:
            self._writer.close()
        if self._handle is not None:
            self._handle.close()


class DatasetWriter:
    """Context manager that writes rows into a folder of ordered Parquet chunks, `part-000000.parquet`
    and on, each of `chunk_rows` rows (the last one, or the one cut short by an error, fewer).

    A chunk appears whole or not at all (temporary file, fsync, rename), so a killed run leaves only
    whole chunks: with `resume`, `rows_done` says how many input rows they hold and the next chunk
    follows them. `settings` (the model, say) are stored beside the chunks; resuming with others is
    refused. Without `resume`, a folder that already holds chunks is refused.
    """

    def __init__(self, folder: str | os.PathLike, *, chunk_rows: int = CHUNK_ROWS, resume: bool = False,
                 settings: dict | None = None) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.path = Path(folder)
        self.chunk_rows = chunk_rows
        self.resume = resume
        self.settings = json.loads(json.dumps(settings or {}))  # as it reads back from the file
        self.rows_done = 0
        self.rows_written = 0
        self._chunks = 0
        self._schema = None
        self._buffer: list[dict] = []

    def __enter__(self) -> DatasetWriter:
        import pyarrow.parquet as pq

        self.path.mkdir(parents=True, exist_ok=True)
        for leftover in self.path.glob(".part-*.tmp"):
            leftover.unlink()
        chunks = self._chunk_files()
        if chunks and not self.resume:
            raise ValueError(f"{self.path} already holds {len(chunks)} result chunks: resume the run, or choose an empty folder")
        if chunks:
            stored = json.loads((self.path / DATASET_SETTINGS).read_text())
            if stored != self.settings:
                raise ValueError(f"{self.path} was written with other settings ({stored}); cannot resume with {self.settings}")
            self._schema = pq.read_schema(chunks[0])
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

        table = rows_to_table(rows, self._schema)
        self._schema = table.schema
        final = self.path / f"part-{self._chunks:06d}.parquet"
        partial = self.path / f".{final.name}.tmp"
        with open(partial, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(final)
        self._chunks += 1
        self.rows_written += len(rows)


def rows_to_table(rows: list[dict], schema=None):
    """An Arrow table of row dicts (the columns of `schema` when given, else every key in order of
    appearance); built column by column, which is many times faster than row by row."""
    import pyarrow as pa

    names = schema.names if schema is not None else list(dict.fromkeys(key for row in rows for key in row))
    return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in names}, schema=schema)


def _csv_value(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value
