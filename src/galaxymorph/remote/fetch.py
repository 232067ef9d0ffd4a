"""Fetch cutouts asynchronously: bounded concurrency, a per-host rate limit, retries, checked and cached files.

Requests go out through `httpx.AsyncClient`s opened with `async with` and stream their bodies; at
most `concurrency` are in flight and they start no faster than `rate_limit` a second. Connection errors, timeouts,
5xx and 429 (after its `Retry-After`), and answers that are not a whole image, are retried with
exponential backoff and jitter. A response is kept only when its status, content type and content
(it decodes as an image) are right, and it is written atomically, so the cache never holds a
partial file: a re-run, or a run after a crash, fetches only what is missing. With
`FetchOptions.widen_truncated`, a cutout in which the framing finds the galaxy cut by the edge is
asked again at twice the field, up to that many times. Results come out in input order, one per
position, with the reason when a position could not be fetched.
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import math
import os
import sys
import queue
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path

import httpx

from galaxymorph.catalog import CatalogRow, SkyPosition, iter_sky_positions
from galaxymorph.config import cache_dir
from galaxymorph.errors import ImageReadError
from galaxymorph.remote.services import CutoutRequest, CutoutService, FetchOptions

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_CUTOUT_BYTES = 64 << 20
UNREACHABLE_AFTER = 20
"""Failed connections in a row after which a service counts as down: the remaining rows fail at
once (cached cutouts are still used) instead of each waiting through its retries."""
CONNECTIONS_PER_CLIENT = 4
CONTENT_TYPES = {".jpeg": ("image/jpeg", "image/jpg"),
                 ".fits": ("application/fits", "image/fits", "application/octet-stream")}


@dataclass(frozen=True)
class FetchResult:
    """What became of one position: `status` is fetched, cached or failed (then `error` says why);
    `widened`: how many times the field was doubled because the galaxy ran off the cutout."""

    position: SkyPosition
    file: Path | None
    status: str
    attempts: int = 0
    error: str = ""
    widened: int = 0


class CutoutCache:
    """Cutout files under `root`, named by the request's key: `root/SURVEY/ab/abcdef....jpeg`."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._folders: set[Path] = set()

    @classmethod
    def default(cls) -> CutoutCache:
        """The cache `classify --fetch` and the web service share: `cutouts/` in the galaxymorph cache."""
        return cls(cache_dir() / "cutouts")

    def path_for(self, request: CutoutRequest) -> Path:
        key = request.key
        return self.root / request.survey / key[:2] / f"{key}{request.suffix}"

    def store(self, request: CutoutRequest, content: bytes) -> Path:
        """Write atomically: a temporary file in the same folder, then renamed over the final name,
        so a killed or crashed run never leaves a partial file under a cache name. (Not flushed
        to disk: surviving a power cut is not worth an fsync per cutout.)"""
        path = self.path_for(request)
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        partial.write_bytes(content)
        os.replace(partial, path)
        return path

    def remove_stale_partials(self) -> int:
        """Delete temporary files left by runs that were killed; returns how many."""
        removed = 0
        for partial in self.root.glob("*/*/*.part") if self.root.is_dir() else []:
            pid = partial.name.rsplit(".", 2)[-2]
            if not (pid.isdigit() and _process_alive(int(pid))):
                partial.unlink(missing_ok=True)
                removed += 1
        return removed


class InvalidCutout(Exception):
    """A response that is not a usable image; worth another try, since services fail transiently."""


def check_cutout(content: bytes, content_type: str, request: CutoutRequest) -> None:
    """Raise `InvalidCutout` unless the answer is a whole image of the requested kind."""
    content_type = content_type.split(";")[0].strip().lower()
    if content_type not in CONTENT_TYPES[request.suffix]:
        raise InvalidCutout(f"answer is {content_type or 'untyped'}, not an image")
    if not content:
        raise InvalidCutout("answer is empty")
    try:
        if request.suffix == ".fits":
            from astropy.io import fits

            with fits.open(io.BytesIO(content)) as hdus:
                if not any(hdu.data is not None and hdu.data.ndim >= 2 for hdu in hdus):
                    raise InvalidCutout("FITS answer holds no image")
        else:
            from PIL import Image

            with Image.open(io.BytesIO(content)) as image:
                # Decoding at 1/8 scale still reads every byte, so a cut-off image fails here too.
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
    except InvalidCutout:
        raise
    except Exception as exc:  # any decoder failure means a broken image
        raise InvalidCutout(f"answer does not decode as an image ({exc})") from exc


class ServiceHealth:
    """Counts connection failures in a row; any answer from the service resets the count."""

    def __init__(self) -> None:
        self.failures_in_a_row = 0

    @property
    def down(self) -> bool:
        return self.failures_in_a_row >= UNREACHABLE_AFTER

    def record(self, connected: bool) -> None:
        self.failures_in_a_row = 0 if connected else self.failures_in_a_row + 1


class RateLimiter:
    """At most `rate` starts a second (0: unlimited), spaced evenly."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            await asyncio.sleep(delay)


async def fetch_cutouts(positions: Iterable[SkyPosition], service: CutoutService, cache: CutoutCache,
                        options: FetchOptions = FetchOptions()) -> AsyncIterator[FetchResult]:
    """Fetch the cutout of each position; yields one `FetchResult` per position, in input order."""
    cache.remove_stale_partials()
    limiter, health = RateLimiter(options.rate_limit), ServiceHealth()
    slots = asyncio.Semaphore(options.concurrency)
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client) for client in _clients(service, options)]

        async def fetch_field(position: SkyPosition, client: httpx.AsyncClient, widening: int) -> FetchResult:
            request = service.request(position.ra, position.dec, widening=widening)
            path = cache.path_for(request)
            if path.is_file():
                return FetchResult(position, path, "cached", widened=widening)
            result = await _fetch_with_retries(client, request, position, cache, limiter, slots, health, options)
            return replace(result, widened=widening)

        async def cut_off(position: SkyPosition, result: FetchResult) -> bool:
            """Whether the galaxy runs off this cutout; known without decoding it when the next wider
            field is in the cache (it was asked for only because this one cut the galaxy off)."""
            wider = service.request(position.ra, position.dec, widening=result.widened + 1)
            return cache.path_for(wider).is_file() or await asyncio.to_thread(galaxy_truncated, result.file)

        async def fetch(position: SkyPosition, client: httpx.AsyncClient) -> FetchResult:
            """The first cutout that holds the whole galaxy, up to `widen_truncated` times wider; a
            wider field that cannot be fetched leaves the narrower cutout (its attempts counted)."""
            if position.error:
                return FetchResult(position, None, "failed", error=position.error)
            result = await fetch_field(position, client, 0)
            attempts = result.attempts
            while (result.file is not None and result.widened < options.widen_truncated
                   and await cut_off(position, result)):
                wider = await fetch_field(position, client, result.widened + 1)
                attempts += wider.attempts
                if wider.file is None:
                    break
                result = wider
            return replace(result, attempts=attempts)

        pending: deque[asyncio.Task[FetchResult]] = deque()
        try:
            for number, position in enumerate(positions):
                pending.append(asyncio.create_task(fetch(position, clients[number % len(clients)])))
                if len(pending) >= 4 * options.concurrency:
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:
            for task in pending:
                task.cancel()


def _clients(service: CutoutService, options: FetchOptions) -> list[httpx.AsyncClient]:
    """HTTP clients sharing the connections: httpx's pool does work proportional to its size for
    every request, so several small pools cost less CPU than one large one."""
    count = math.ceil(options.concurrency / CONNECTIONS_PER_CLIENT)
    size = math.ceil(options.concurrency / count)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    verify = ssl.create_default_context()  # loading the trusted certificates once, not per client
    return [httpx.AsyncClient(headers=service.headers(), timeout=httpx.Timeout(options.timeout), limits=limits,
                              verify=verify) for _ in range(count)]


async def _fetch_with_retries(client: httpx.AsyncClient, request: CutoutRequest, position: SkyPosition,
                              cache: CutoutCache, limiter: RateLimiter, slots: asyncio.Semaphore,
                              health: ServiceHealth, options: FetchOptions) -> FetchResult:
    """One position's request, retried; a slot of `slots` is held only while a request is in flight,
    not during backoff waits or the checks and the write."""
    reason, retry_after = "", None
    for attempt in range(1, options.retries + 2):
        if health.down:
            return FetchResult(position, None, "failed", attempt - 1,
                               f"service unreachable ({health.failures_in_a_row} failed connections in a row)")
        if attempt > 1:
            await asyncio.sleep(_backoff(attempt - 1, options) if retry_after is None else retry_after)
        retry_after = None
        try:
            async with slots:
                await limiter.wait()
                async with client.stream("GET", request.url, params=request.params) as response:
                    health.record(connected=True)
                    if response.status_code in RETRY_STATUSES:
                        reason = f"HTTP {response.status_code}"
                        retry_after = _retry_after_seconds(response.headers.get("retry-after"), options.max_backoff)
                        continue
                    if response.status_code != 200:
                        return FetchResult(position, None, "failed", attempt, f"refused: HTTP {response.status_code}")
                    content_type = response.headers.get("content-type", "")
                    content = await _read_body(response)
            # Decoding and the atomic write run in a thread, so that the event loop never waits on them.
            return FetchResult(position, await asyncio.to_thread(_check_and_store, cache, request, content_type, content),
                               "fetched", attempt)
        except httpx.ConnectError as exc:
            reason = f"cannot connect ({exc or type(exc).__name__})"
            health.record(connected=False)
        except httpx.TimeoutException:
            reason = f"timed out after {options.timeout:g} s"
        except httpx.TransportError as exc:
            reason = f"connection failed ({type(exc).__name__})"
        except InvalidCutout as exc:
            reason = str(exc)
    return FetchResult(position, None, "failed", options.retries + 1, f"gave up after {options.retries + 1} attempts: {reason}")


async def _read_body(response: httpx.Response) -> bytes:
    """The streamed body, refused past `MAX_CUTOUT_BYTES` (a cutout is never that large)."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_CUTOUT_BYTES:
            raise InvalidCutout(f"answer is larger than {MAX_CUTOUT_BYTES >> 20} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def galaxy_truncated(file: Path) -> bool:
    """Whether the framing (default preprocessing) finds the galaxy of a cutout cut by its edge."""
    from galaxymorph.preprocess.decode import read_model_input

    try:
        return bool(read_model_input(file).galaxy_truncated)
    except ImageReadError:  # checked as an image when fetched: classify will say what is wrong
        return False


def _check_and_store(cache: CutoutCache, request: CutoutRequest, content_type: str, content: bytes) -> Path:
    check_cutout(content, content_type, request)
    return cache.store(request, content)


def _backoff(attempt: int, options: FetchOptions) -> float:
    """Exponential backoff, jittered by +-50% so that retries of many requests spread out."""
    return random.uniform(0.5, 1.5) * min(options.backoff * 2 ** (attempt - 1), options.max_backoff)


def _retry_after_seconds(value: str | None, limit: float) -> float | None:
    """A `Retry-After` header (seconds or an HTTP date) in seconds, at most `limit`."""
    if not value:
        return None
    if value.strip().isdigit():
        return min(float(value), limit)
    try:
        return min(max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time()), limit)
    except (TypeError, ValueError):
        return None


def iter_fetched(positions: Iterable[SkyPosition], service: CutoutService, cache: CutoutCache,
                 options: FetchOptions = FetchOptions()) -> Iterator[FetchResult]:
    """`fetch_cutouts` for synchronous code: the downloads run on an event loop in a background
    thread while the caller works on the results; at most a few batches wait in between."""
    results: queue.Queue = queue.Queue(maxsize=8 * options.concurrency)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    async def produce() -> None:
        async for result in fetch_cutouts(positions, service, cache, options):
            try:
                results.put_nowait(result)
            except queue.Full:  # the caller is behind: wait for room without blocking the event loop
                if not await asyncio.to_thread(put, result):
                    return

    def run() -> None:
        try:
            asyncio.run(produce())
            put(done)
        except BaseException as exc:  # handed to the caller's thread
            put(exc)

    worker = threading.Thread(target=run, name="galaxymorph-fetch", daemon=True)
    worker.start()
    try:
        while (item := results.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)  # downloads still in flight are abandoned with the daemon thread


@dataclass(frozen=True)
class FetchSummary:
    manifest: Path
    rows: int
    fetched: int
    cached: int
    failed: int


def fetch_catalog(catalog: str | os.PathLike, output_dir: str | os.PathLike, service: CutoutService, *,
                  options: FetchOptions = FetchOptions(), ra_column: str = "ra", dec_column: str = "dec",
                  id_column: str | None = None, progress: bool = False) -> FetchSummary:
    """Fetch a cutout for every row of a catalog into `output_dir`, with `manifest.csv` listing the
    input columns, `id`, `file` (relative to the folder, so the manifest is a catalog `classify`
    reads; with `options.widen_truncated`, the folder also keeps the narrower cutouts that cut a
    galaxy off), `status`, `attempts`, `widened` and `error` of every row."""
    from tqdm import tqdm

    from galaxymorph.catalog import count_catalog_rows
    from galaxymorph.outputs.catalog_writer import CatalogWriter
    from galaxymorph.outputs.metadata import fetch_provenance

    output_dir = Path(output_dir)
    manifest = output_dir / "manifest.csv"
    show_progress = progress and sys.stderr.isatty()
    counts = {"fetched": 0, "cached": 0, "failed": 0}
    positions = iter_sky_positions(catalog, ra_column=ra_column, dec_column=dec_column, id_column=id_column)
    cache = CutoutCache(output_dir)
    with CatalogWriter(manifest, provenance=fetch_provenance(service, options)) as writer, \
            tqdm(desc="fetch", unit="img", total=count_catalog_rows(catalog) if show_progress else None,
                 disable=not show_progress) as bar:
        for result in iter_fetched(positions, service, cache, options):
            counts[result.status] += 1
            writer.write([manifest_row(result, relative_to=output_dir)])
            bar.update()
    return FetchSummary(manifest, writer.rows_written, **counts)


def iter_fetched_rows(catalogs: str | os.PathLike | Sequence[str | os.PathLike], service: CutoutService,
                      cache: CutoutCache, *, options: FetchOptions = FetchOptions(), ra_column: str = "ra",
                      dec_column: str = "dec", id_column: str | None = None, skip: int = 0) -> Iterator[CatalogRow]:
    """The rows of one or more catalogs of positions as images to classify, fetched as they are
    needed; a row that could not be fetched carries the reason, and every row keeps the catalog's
    columns. The first `skip` rows are left out without being fetched (a resumed run)."""
    paths = [catalogs] if isinstance(catalogs, (str, os.PathLike)) else list(catalogs)
    positions = chain.from_iterable(iter_sky_positions(path, ra_column=ra_column, dec_column=dec_column,
                                                       id_column=id_column) for path in paths)
    return fetched_rows(islice(positions, skip, None), service, cache, options)


def fetched_rows(positions: Iterable[SkyPosition], service: CutoutService, cache: CutoutCache,
                 options: FetchOptions = FetchOptions()) -> Iterator[CatalogRow]:
    """Positions as images to classify, fetched as they are needed; a failed one carries the reason."""
    for result in iter_fetched(positions, service, cache, options):
        yield CatalogRow(result.position.id, result.file, result.error, result.position.columns)


def manifest_row(result: FetchResult, *, relative_to: Path) -> dict:
    file = "" if result.file is None else str(result.file.relative_to(relative_to))
    return {**result.position.columns, "id": result.position.id, "file": file, "status": result.status,
            "attempts": result.attempts, "widened": result.widened, "error": result.error}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
