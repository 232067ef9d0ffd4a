"""Write result rows to CSV or Parquet as they arrive, so nothing computed is held back or lost."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from types import TracebackType

OUTPUT_SUFFIXES = (".csv", ".parquet", ".pq")


def check_output_path(path: str | os.PathLike) -> Path:
    """Validate the output catalog's suffix early, before any work is done."""
    path = Path(path)
    if not path.name.lower().endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"output must end in .csv or .parquet, got {path.name!r}")
    return path


class CatalogWriter:
    """Context manager that appends batches of rows (dicts with the same keys) to a catalog file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_output_path(path)
        self._parquet = not self.path.name.lower().endswith(".csv")
        self._writer = None
        self._handle = None
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
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            table = pa.Table.from_pylist(rows)
            self._writer = pq.ParquetWriter(self.path, table.schema)
        else:
            table = pa.Table.from_pylist(rows, schema=self._writer.schema)
        self._writer.write_table(table)

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._parquet and self._writer is not None:
            self._writer.close()
        if self._handle is not None:
            self._handle.close()


def _csv_value(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value
