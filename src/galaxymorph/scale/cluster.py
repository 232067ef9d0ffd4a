"""Classify a Dask DataFrame of rows where its partitions sit, on any dask.distributed scheduler.

Each worker process loads the model once and keeps it; a partition is decoded and classified in the
worker that holds it, and comes back as a DataFrame with the morphology columns, ready for
`to_parquet`. Rows name image files (relative paths against `folder`), or sky positions whose
cutouts the workers fetch. Survey teams run this on a `LocalCluster`, or on Slurm through
dask-jobqueue's `SLURMCluster`, whose scheduler address goes to `classify_on_cluster`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from galaxymorph.catalog import FILE_COLUMNS, ID_COLUMNS, CatalogRow, catalog_row, find_column, sky_position
from galaxymorph.config import DEFAULT_MODEL, default_workers
from galaxymorph.models import load_model
from galaxymorph.outputs.metadata import provenance
from galaxymorph.prediction import Classifier, ClassifySummary, PredictOptions, Scores
from galaxymorph.preprocess.parallel import DecodedBatch
from galaxymorph.remote import Cutouts

WORKER_OPTIONS = PredictOptions(workers=0, threads=1)
"""Dask runs one task per worker thread: each decodes in its own thread and infers on one core."""
_classifiers: dict[tuple, Classifier] = {}


def classify_dataframe(frame, *, model: str | os.PathLike = DEFAULT_MODEL, options: PredictOptions = WORKER_OPTIONS,
                       folder: str | os.PathLike | None = None, cutouts: Cutouts | None = None):
    """A Dask DataFrame with the input's columns and the morphology columns of `classify`, one row
    per input row, in order. `frame` has a file column (`file` or `file_loc`, relative paths against
    `folder`) or, with `cutouts`, ra and dec columns; `id` (or `id_str`, `objid`) when present."""
    columns = list(frame.columns)
    if cutouts is None:
        find_column(columns, FILE_COLUMNS, path="data frame")
    else:
        find_column(columns, [cutouts.ra_column], path="data frame")
        find_column(columns, [cutouts.dec_column], path="data frame")
    meta = _output_meta(_worker_classifier(str(model), options), frame._meta)
    folder = None if folder is None else str(Path(folder).resolve())
    return frame.map_partitions(_classify_partition, model=str(model), options=options, folder=folder,
                                cutouts=cutouts, meta=meta)


def classify_on_cluster(catalogs: Sequence[str | os.PathLike], output: str | os.PathLike, *, scheduler: str,
                        model: str | os.PathLike = DEFAULT_MODEL, options: PredictOptions = WORKER_OPTIONS,
                        cutouts: Cutouts | None = None, partition_rows: int = 10_000) -> ClassifySummary:
    """Classify catalogs (.csv or .parquet) on the Dask cluster at `scheduler` ("local" starts a
    `LocalCluster` with one single-threaded worker per core) into a Parquet dataset folder."""
    import dask.dataframe as dd
    import pyarrow.dataset
    from distributed import Client, LocalCluster

    output = Path(output)
    if output.suffix:
        raise ValueError(f"with a scheduler, the output is a Parquet dataset folder (a name without a suffix), got {output.name!r}")
    frames = [_read_catalog_frame(Path(catalog), partition_rows) for catalog in catalogs]
    with ExitStack() as stack:
        if scheduler == "local":
            scheduler = stack.enter_context(LocalCluster(n_workers=default_workers(), threads_per_worker=1))
        stack.enter_context(Client(scheduler))
        results = [classify_dataframe(frame, model=model, options=options, folder=Path(catalog).parent, cutouts=cutouts)
                   for catalog, frame in zip(catalogs, frames)]
        record = json.dumps(provenance(load_model(model), tta=options.tta))
        dd.concat(results).to_parquet(output, write_index=False, name_function=_chunk_name,
                                      custom_metadata={"galaxymorph": record})
    table = pyarrow.dataset.dataset(output).to_table(columns=["error"])
    failed = sum(1 for error in table.column("error").to_pylist() if error)
    return ClassifySummary(output, table.num_rows, failed)


def _chunk_name(number: int) -> str:
    """Chunks named as `classify` names them, so the folder reads back in input order."""
    return f"part-{number:06d}.parquet"


def _read_catalog_frame(path: Path, partition_rows: int):
    import dask.dataframe as dd

    from galaxymorph.errors import CatalogError

    if not path.is_file():
        reason = "is a folder; with a scheduler, give catalogs (.csv or .parquet)" if path.is_dir() else "file not found"
        raise CatalogError(f"catalog {path}: {reason}")
    name = path.name.lower()
    if name.endswith(".csv"):
        frame = dd.read_csv(path, dtype=str, keep_default_na=False)
    elif name.endswith((".parquet", ".pq")):
        frame = dd.read_parquet(path)
    else:
        raise CatalogError(f"catalog {path}: a scheduler takes .csv or .parquet catalogs")
    return frame.repartition(npartitions=max(1, -(-len(frame) // partition_rows)))


def _worker_classifier(model: str, options: PredictOptions) -> Classifier:
    """The model, loaded once per process and kept for every partition that process classifies."""
    from galaxymorph.models import load_model

    key = (model, options.backend, options.threads, options.tta)
    if key not in _classifiers:
        _classifiers[key] = Classifier(load_model(model), backend=options.backend, threads=options.threads, tta=options.tta)
    return _classifiers[key]


def _classify_partition(part, *, model: str, options: PredictOptions, folder: str | None, cutouts: Cutouts | None):
    import pandas as pd

    classifier = _worker_classifier(model, options)
    rows = _partition_rows(part, folder, cutouts)
    output = [row for batch in classifier.classify_rows(rows, options=options) for row in batch]
    meta = _output_meta(classifier, part.iloc[:0])
    return pd.DataFrame(output, columns=list(meta.columns)).astype(meta.dtypes.to_dict()) if output else meta


def _partition_rows(part, folder: str | None, cutouts: Cutouts | None) -> Iterator[CatalogRow]:
    names = list(part.columns)
    records = part.to_dict("records")
    if cutouts is None:
        id_column = find_column(names, ID_COLUMNS, path="data frame", required=False)
        file_column = find_column(names, FILE_COLUMNS, path="data frame")
        for record in records:
            yield catalog_row(record, folder=folder or "", file_column=file_column, id_column=id_column)
        return
    from galaxymorph.remote import fetched_rows

    id_column = find_column(names, [cutouts.id_column] if cutouts.id_column else ID_COLUMNS, path="data frame",
                            required=cutouts.id_column is not None)
    ra, dec = cutouts.ra_column, cutouts.dec_column
    positions = [sky_position(record, row_id=str(record[id_column]) if id_column else f"{record[ra]},{record[dec]}",
                              ra_column=ra, dec_column=dec) for record in records]
    yield from fetched_rows(positions, cutouts.service, cutouts.cache, cutouts.options)


def _output_meta(classifier: Classifier, input_meta):
    """The output's empty frame: the input's columns, then the morphology columns with their types."""
    import numpy as np
    import pandas as pd

    def probe_row(columns: dict) -> dict:
        decoded = DecodedBatch([CatalogRow("", None, "probe", columns)], np.zeros((1, 0)), [""], [None], [None])
        return classifier.build_rows(decoded, Scores.missing(1, len(classifier.classes)))[0]

    ours = probe_row({})
    types = {bool: "bool", float: "float64", str: "string"}
    return pd.DataFrame({
        name: pd.Series(dtype=types[type(ours[name])] if name in ours else input_meta[name].dtype)
        for name in probe_row({name: None for name in input_meta.columns})})
