"""Decode images in worker processes, in order, into shared-memory batches.

Workers write model inputs straight into a ring of shared-memory blocks, one batch per block, and
send back only the error reasons; the pixels are never pickled. Bounding the batches in flight keeps
memory flat however many inputs there are: the reader never runs more than a few batches ahead of
whoever consumes them.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from itertools import islice
from multiprocessing import shared_memory
from pathlib import Path
from typing import Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from galaxymorph.config import CHANNELS, MAX_PIXELS, Preprocessing
from galaxymorph.errors import ImageReadError
from galaxymorph.preprocess.decode import ModelInput, decode_array, decoded_side, read_jpeg_pixels, read_model_input

Item = TypeVar("Item")
BATCHES_IN_FLIGHT_PER_WORKER = 2
_blocks: dict[str, shared_memory.SharedMemory] = {}
"""Shared-memory blocks of this process: created here, inherited through fork, or attached by name."""


@runtime_checkable
class ImageSource(Protocol):
    """An image that is not a file of its own (a row of an HDF5 array, a member of a tar shard)."""

    def model_input(self, preprocessing: Preprocessing, max_pixels: int = MAX_PIXELS) -> ModelInput: ...


@dataclass
class RawPixels:
    """The 8-bit RGB pixels of the JPEGs of a batch that were decoded but not framed, packed one
    after another in `buffer`: item i's (H, W, 3) start at `offsets[i]`; `shapes[i]` is None for an
    item that was framed where it was decoded (or failed)."""

    buffer: np.ndarray
    shapes: list[tuple[int, int] | None]
    offsets: list[int]
    used: int
    """The bytes at the start of `buffer` that hold pixels."""


def _raw_capacity(preprocessing: Preprocessing, batch_size: int) -> int:
    """Bytes for a batch of raw JPEG pixels: reduced-scale decodes are at most about twice the
    decoded side a side (larger ones, and those that no longer fit, are framed by the worker)."""
    return batch_size * (2 * decoded_side(preprocessing)) ** 2 * CHANNELS


@dataclass
class DecodedBatch(Generic[Item]):
    """Items with their model inputs (zeros where decoding failed), error reasons ('' when fine) and,
    with framing on, whether a central galaxy was found and whether it runs off the image. From `decode_in_batches` with workers,
    `images` lies in shared memory that the next batch reuses: copy it to keep it. With `raw`
    decoding, the JPEGs' pixels are in `raw` instead, their inputs still zeros and their framing
    flags None, for `preprocess.batched` to frame."""

    items: list[Item]
    images: np.ndarray
    errors: list[str]
    galaxy_found: list[bool | None]
    galaxy_truncated: list[bool | None]
    raw: RawPixels | None = None

    @classmethod
    def of(cls, items: list[Item], decoded: Sequence[ModelInput | ImageReadError], size: int) -> DecodedBatch[Item]:
        """A batch of items decoded one by one elsewhere (a `ModelInput`, or the error that stopped it)."""
        blank = np.zeros((CHANNELS, size, size), np.float32)
        inputs = [d if isinstance(d, ModelInput) else None for d in decoded]
        return cls(items, np.stack([d.pixels if d else blank for d in inputs]),
                   [d.reason if isinstance(d, ImageReadError) else "" for d in decoded],
                   [d.galaxy_found if d else None for d in inputs], [d.galaxy_truncated if d else None for d in inputs])


def decode_files(files: Sequence[Path | ImageSource | None], preprocessing: Preprocessing, *,
                 out: np.ndarray | None = None, max_pixels: int = MAX_PIXELS,
                 raw: np.ndarray | None = None) -> DecodedBatch[Path | ImageSource | None]:
    """Decode files into (N, 3, S, S) float32 (into `out` when given); a failed file leaves zeros
    and its reason in errors, whatever went wrong: one file never ends a batch. Given a `raw` byte
    buffer, JPEG files are only decoded, their pixels packed into it while they fit (`RawPixels`).

    A `None` file is a row that failed before decoding; its slot stays empty with no error here.
    """
    size = preprocessing.image_size
    images = np.empty((len(files), CHANNELS, size, size), dtype=np.float32) if out is None else out
    batch = DecodedBatch(list(files), images, [""] * len(files), [None] * len(files), [None] * len(files))
    if raw is not None:
        batch.raw = RawPixels(raw, [None] * len(files), [0] * len(files), 0)
    for i, file in enumerate(files):
        images[i] = 0.0
        if file is None:
            continue
        try:
            pixels = (read_jpeg_pixels(file, preprocessing, max_pixels=max_pixels)
                      if batch.raw is not None and isinstance(file, Path) else None)
            if pixels is not None and _pack_raw(batch.raw, i, pixels):
                continue
            if pixels is not None:  # decoded, but no room left: framed here
                decoded = decode_array(pixels, str(file), preprocessing)
            elif isinstance(file, ImageSource):
                decoded = file.model_input(preprocessing, max_pixels)
            else:
                decoded = read_model_input(file, preprocessing, max_pixels=max_pixels)
        except ImageReadError as exc:
            batch.errors[i] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a reader's bug on a hostile file is that file's error
            batch.errors[i] = str(ImageReadError.unexpected(file, exc))
        else:
            images[i], batch.galaxy_found[i], batch.galaxy_truncated[i] = decoded.pixels, decoded.galaxy_found, decoded.galaxy_truncated
    return batch


def _pack_raw(raw: RawPixels, i: int, pixels: np.ndarray) -> bool:
    """Copy a JPEG's decoded pixels into the free space of `raw` as item i; False when they do not fit."""
    if raw.used + pixels.size > len(raw.buffer):
        return False
    raw.buffer[raw.used:raw.used + pixels.size] = pixels.ravel()
    raw.shapes[i], raw.offsets[i] = pixels.shape[:2], raw.used
    raw.used += pixels.size
    return True


def decode_in_batches(
    items: Iterable[Item],
    preprocessing: Preprocessing,
    *,
    file_of: Callable[[Item], Path | ImageSource | None],
    batch_size: int,
    workers: int,
    max_pixels: int = MAX_PIXELS,
    raw: bool = False,
) -> Iterator[DecodedBatch[Item]]:
    """Yield decoded batches of `items`, in input order; with `raw`, JPEG files come as pixels to
    frame (`DecodedBatch.raw`), the rest as model inputs.

    `workers=0` decodes in this process; otherwise a pool of processes (the platform's default start
    method, so scripts without a `__main__` guard work on Linux) decodes into shared memory while
    the caller works on earlier batches.
    """
    iter_items = iter(items)
    batches = iter(lambda: list(islice(iter_items, batch_size)), [])
    raw_bytes = _raw_capacity(preprocessing, batch_size) if raw else 0
    if workers <= 0:
        for batch in batches:
            yield replace(decode_files([file_of(item) for item in batch], preprocessing, max_pixels=max_pixels,
                                       raw=np.empty(raw_bytes, np.uint8) if raw else None), items=batch)
        return
    in_flight = workers * BATCHES_IN_FLIGHT_PER_WORKER
    shape = (batch_size, CHANNELS, preprocessing.image_size, preprocessing.image_size)
    context = multiprocessing.get_context()
    if context.get_start_method() == "fork":  # forked workers inherit the compiled kernels
        from galaxymorph.preprocess import compiled

        compiled.warm_up()
    with _shared_blocks(in_flight + 1, _float_bytes(shape) + raw_bytes, inherited=context.get_start_method() == "fork") as blocks, \
            ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with_parent,
                                initargs=(os.getpid(),)) as pool:
        yield from _pipelined(pool, batches, partial(_decode_into_block, preprocessing=preprocessing, max_pixels=max_pixels,
                                                     raw_bytes=raw_bytes), file_of, blocks, shape, raw_bytes)


def model_inputs(files: Sequence[Path], preprocessing: Preprocessing, workers: int) -> np.ndarray:
    """The decodable files as model inputs (N, 3, S, S), in a plain array; unreadable ones are left out."""
    batches = [batch.images[[not error for error in batch.errors]]  # boolean indexing copies out of shared memory
               for batch in decode_in_batches(files, preprocessing, file_of=Path, batch_size=64, workers=workers)]
    size = preprocessing.image_size
    return np.concatenate(batches) if batches else np.empty((0, CHANNELS, size, size), np.float32)


def _float_bytes(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) * np.dtype(np.float32).itemsize


def _block_views(block: shared_memory.SharedMemory, shape: tuple[int, ...], raw_bytes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A block's model inputs, float32 `shape`, and the `raw_bytes` after them (None when 0)."""
    images = np.ndarray(shape, dtype=np.float32, buffer=block.buf)
    raw = np.ndarray((raw_bytes,), dtype=np.uint8, buffer=block.buf, offset=_float_bytes(shape)) if raw_bytes else None
    return images, raw


@contextmanager
def _shared_blocks(count: int, size: int, *, inherited: bool) -> Iterator[list[shared_memory.SharedMemory]]:
    """`count` shared-memory blocks of `size` bytes.

    When workers are forked from this process (`inherited`), they inherit the mappings, so the
    blocks' names are removed at once and even a killed run leaves nothing behind in /dev/shm;
    otherwise workers attach by name and the names go when the blocks do.
    """
    blocks = []
    try:
        for _ in range(count):
            block = shared_memory.SharedMemory(name=f"gm-{secrets.token_hex(8)}", create=True, size=size)
            blocks.append(block)
            _blocks[block.name] = block
            if inherited:
                block.unlink()
        yield blocks
    finally:
        for block in blocks:
            del _blocks[block.name]
            try:
                block.close()
            except BufferError:  # the caller still holds the last batch; the mapping goes with it
                pass
            if not inherited:
                block.unlink()


def _pipelined(pool: Executor, batches: Iterator[list], decode: Callable, file_of: Callable,
               blocks: list[shared_memory.SharedMemory], shape: tuple[int, ...], raw_bytes: int) -> Iterator[DecodedBatch]:
    free = deque(blocks)
    pending: deque[tuple[list, shared_memory.SharedMemory, Future]] = deque()

    def submit_next() -> None:
        batch = next(batches, None)
        if batch is not None:
            block = free.popleft()
            future = pool.submit(decode, block.name, shape, [file_of(item) for item in batch])
            pending.append((batch, block, future))

    for _ in range(len(blocks) - 1):
        submit_next()
    while pending:
        batch, block, future = pending.popleft()
        errors, galaxy_found, galaxy_truncated, packed = future.result()
        images, raw = _block_views(block, shape, raw_bytes)
        yield DecodedBatch(batch, images[:len(batch)], errors, galaxy_found, galaxy_truncated,
                           RawPixels(raw, *packed) if packed else None)
        del images, raw
        free.append(block)  # the caller has asked for the next batch: this one's block is free again
        submit_next()


def _exit_with_parent(parent: int) -> None:
    """In a worker: ask Linux to end this process when its parent dies (killed with -9, say), so that
    no decoding process outlives the job (elsewhere they may outlive a killed parent)."""
    if sys.platform.startswith("linux"):
        import ctypes

        set_parent_death_signal = 1  # prctl's PR_SET_PDEATHSIG
        ctypes.CDLL(None, use_errno=True).prctl(set_parent_death_signal, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


def _decode_into_block(name: str, shape: tuple[int, ...], files: list, *, preprocessing: Preprocessing,
                       max_pixels: int, raw_bytes: int) -> tuple[list[str], list[bool | None], list[bool | None], tuple | None]:
    """In a worker: decode into the named shared-memory block; only the reasons, flags and the
    places of raw pixels travel back."""
    if name not in _blocks:  # not inherited through fork: attach by name
        _blocks[name] = shared_memory.SharedMemory(name=name)
    out, raw = _block_views(_blocks[name], shape, raw_bytes)
    batch = decode_files(files, preprocessing, out=out[:len(files)], max_pixels=max_pixels, raw=raw)
    del out, raw
    packed = (batch.raw.shapes, batch.raw.offsets, batch.raw.used) if batch.raw is not None else None
    batch.raw = None  # its buffer is the block's
    return batch.errors, batch.galaxy_found, batch.galaxy_truncated, packed
