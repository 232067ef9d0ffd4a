"""Decode images in worker processes, in order, with a bounded number of batches in flight.

Bounding what is in flight keeps memory flat however many inputs there are: the reader never runs
more than a few batches ahead of whoever consumes them.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from galaxymorph.config import CHANNELS, Preprocessing
from galaxymorph.errors import ImageReadError
from galaxymorph.preprocess.decode import read_model_input

Item = TypeVar("Item")
BATCHES_IN_FLIGHT_PER_WORKER = 2


@dataclass
class DecodedBatch(Generic[Item]):
    """Items with their model inputs (zeros where decoding failed), error reasons ('' when fine) and,
    with framing on, whether a central galaxy was found."""

    items: list[Item]
    images: np.ndarray
    errors: list[str]
    galaxy_found: list[bool | None]


def decode_files(files: Sequence[Path | None], preprocessing: Preprocessing) -> DecodedBatch[Path | None]:
    """Decode files into (N, 3, S, S) float32; a failed file leaves zeros and its reason in errors.

    A `None` file is a row that failed before decoding; its slot stays empty with no error here.
    """
    size = preprocessing.image_size
    batch = DecodedBatch(list(files), np.zeros((len(files), CHANNELS, size, size), dtype=np.float32),
                         [""] * len(files), [None] * len(files))
    for i, file in enumerate(files):
        if file is None:
            continue
        try:
            decoded = read_model_input(file, preprocessing)
        except ImageReadError as exc:
            batch.errors[i] = str(exc)
        else:
            batch.images[i], batch.galaxy_found[i] = decoded.pixels, decoded.galaxy_found
    return batch


def decode_in_batches(
    items: Iterable[Item],
    preprocessing: Preprocessing,
    *,
    file_of: Callable[[Item], Path | None],
    batch_size: int,
    workers: int,
) -> Iterator[DecodedBatch[Item]]:
    """Yield decoded batches of `items`, in input order.

    `workers=0` decodes in this process; otherwise a pool of processes (the platform's default start
    method, so scripts without a `__main__` guard work on Linux) decodes while the caller works on
    earlier batches.
    """
    iter_items = iter(items)
    batches = iter(lambda: list(islice(iter_items, batch_size)), [])
    if workers <= 0:
        for batch in batches:
            yield replace(decode_files([file_of(item) for item in batch], preprocessing), items=batch)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context()) as pool:
        yield from _pipelined(pool, batches, preprocessing, file_of, workers * BATCHES_IN_FLIGHT_PER_WORKER)


def _pipelined(pool: Executor, batches: Iterator[list], preprocessing: Preprocessing,
               file_of: Callable, in_flight: int) -> Iterator[DecodedBatch]:
    pending: deque[tuple[list, Future]] = deque()

    def submit_next() -> None:
        batch = next(batches, None)
        if batch is not None:
            pending.append((batch, pool.submit(decode_files, [file_of(item) for item in batch], preprocessing)))

    for _ in range(in_flight):
        submit_next()
    while pending:
        batch, future = pending.popleft()
        submit_next()
        yield replace(future.result(), items=batch)
