"""The web service: `galaxymorph serve`, a FastAPI app for pipelines (JSON over HTTP) and people (a page).

Endpoints: `POST /v1/classify` (multipart `files`, one or several images; or a JSON list of
`{"ra", "dec"}` whose cutouts are fetched), `POST /v1/explain` (multipart `file`, returns the
overlay PNG), `POST /v1/similar` and `GET /v1/thumbnails/{row}` (with an index of embeddings),
`GET /v1/models`, `GET /healthz`, the page at `/` and OpenAPI docs at `/docs`.

The model is loaded once. Uploads are decoded in worker threads and requests arriving together
are classified as one batch (dynamic batching: the first request waits at most `batch_window`
seconds for others), so inference never blocks the event loop. Limits: upload size, image pixels
(decompression bombs are refused before decoding), files per request, request time; content is
judged by decoding, never by file name, and client file names never reach the file system. With
`GALAXYMORPH_API_KEY` set, POST endpoints need it (`X-API-Key` header). CORS is off unless origins
are given.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline

from galaxymorph.catalog import CatalogRow, SkyPosition, sky_position_degrees
from galaxymorph.config import DEFAULT_MODEL, MAX_PIXELS, service_api_key
from galaxymorph.errors import ImageReadError, ModelError
from galaxymorph.models import LoadedModel, bundled_models, load_model
from galaxymorph.outputs.plots import thumbnail_jpeg
from galaxymorph.prediction import Classifier, Scores
from galaxymorph.preprocess.decode import ModelInput, decode_bytes, read_model_input
from galaxymorph.preprocess.parallel import DecodedBatch
from galaxymorph.remote.services import DEFAULT_SURVEY
from galaxymorph.sources import file_id


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and behaviour of the service."""

    model: str = DEFAULT_MODEL
    max_upload_bytes: int = 20 << 20
    max_request_bytes: int = 100 << 20
    """Bytes of one request's body, counted as they arrive whatever the framing (JSON: 1 MB)."""
    max_pixels: int = MAX_PIXELS
    max_files: int = 64
    request_timeout: float = 60.0
    body_timeout: float = 30.0
    """Seconds a client may take to send a request's body."""
    header_timeout: float = 10.0
    """Seconds a client may take to send a request's headers (enforced by `serve`'s protocol)."""
    decode_threads: int = 1
    """Images decoded at once across all requests: bounds the memory that large images take."""
    fetching_requests: int = 4
    """Requests of positions fetching cutouts at once; others wait (within their own timeout)."""
    batch_window: float = 0.005
    """Seconds the first request of a batch waits for others (0: no dynamic batching)."""
    max_batch: int = 256
    tta: bool = False
    """Average over the 8 rotations and mirror images at 8x the cost; p_spiral_std then spans the views too."""
    api_key: str | None = field(default_factory=service_api_key)
    cors_origins: tuple[str, ...] = ()
    index: str | None = None
    """Embeddings from `galaxymorph embed` (made with the served model) for `POST /v1/similar`."""


KEEP_ALIVE_SECONDS = 75
MAX_JSON_BYTES = 1 << 20


class ServiceError(Exception):
    """A bad request: its HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, **details: object) -> None:
        super().__init__(message)
        self.status, self.details = status, details


class BodyLimit:
    """ASGI middleware that bounds a request's body by the bytes actually received, however it is
    framed (a Content-Length over the limit is answered at once, before any body is read; chunked
    bodies are counted), and the time the client takes to send it."""

    def __init__(self, app, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        limit = MAX_JSON_BYTES if headers.get(b"content-type", b"").startswith(b"application/json") else self.max_bytes
        declared = headers.get(b"content-length", b"0")
        received, complete = 0, declared == b"0" and b"transfer-encoding" not in headers
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout

        async def closing_send(message):
            # Answered before its body was read (too large, too slow, a refused upload): close rather
            # than wait for the rest of it.
            if message["type"] == "http.response.start" and not complete:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        if not declared.isdigit() or int(declared) > limit:
            error = ServiceError(413, f"request body of {declared.decode('latin-1')} bytes: at most {limit:,} bytes "
                                      "are read" if declared.isdigit() else "Content-Length is not a number")
            return await _error_response(error)(scope, receive, closing_send)

        async def limited_receive():
            nonlocal received, complete
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ServiceError(408, f"the request body took longer than {self.timeout:g} s to arrive") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise ServiceError(413, f"request body over {limit:,} bytes")
            return message

        await self.app(scope, limited_receive, closing_send)


class DynamicBatcher:
    """Collects the images of concurrent requests and runs them through the model together."""

    def __init__(self, classifier: Classifier, window: float, max_batch: int) -> None:
        self.classifier, self.window, self.max_batch = classifier, window, max_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def scores(self, images: np.ndarray) -> Scores:
        if self.window <= 0:
            return await asyncio.to_thread(self.classifier.scores, images)
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        done = asyncio.get_running_loop().create_future()
        await self._queue.put((images, done))
        return await done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self._queue.get()]
            deadline = loop.time() + self.window
            while sum(len(images) for images, _ in waiting) < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    waiting.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            try:
                scores = await asyncio.to_thread(self.classifier.scores, np.concatenate([images for images, _ in waiting]))
            except Exception as error:  # every waiting request hears of it
                for _, done in waiting:
                    if not done.done():
                        done.set_exception(error)
                continue
            start = 0
            for images, done in waiting:
                if not done.done():
                    done.set_result(scores[start:start + len(images)])
                start += len(images)


class Service:
    """What the routes share: the settings, the model behind its `Classifier` and `DynamicBatcher`,
    the pool that decodes uploads and the bound on requests fetching cutouts."""

    def __init__(self, settings: ServiceSettings, loaded: LoadedModel) -> None:
        self.settings, self.loaded = settings, loaded
        loaded.require_trained_head()
        self.classifier = Classifier(loaded, tta=settings.tta, features=settings.index is not None)
        self.batcher = DynamicBatcher(self.classifier, settings.batch_window, settings.max_batch)
        self.decoding = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="galaxymorph-decode")
        self.fetching = asyncio.Semaphore(settings.fetching_requests)
        self.index = _served_index(settings.index, loaded) if settings.index else None

    def check_key(self, request: Request) -> None:
        sent = request.headers.get("x-api-key", "").encode("latin-1")  # the header's own bytes (decoded as latin-1)
        if self.settings.api_key and not secrets.compare_digest(sent, self.settings.api_key.encode()):
            raise ServiceError(401, "missing or wrong API key (X-API-Key header)")

    async def uploads(self, request: Request, field_name: str, limit: int) -> list[tuple[str, bytes]]:
        """The files of a multipart field (label, bytes), within the upload limits."""
        settings = self.settings
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ServiceError(415, f"send images as multipart/form-data in the field {field_name!r}")
        try:
            form = await request.form(max_files=settings.max_files, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_FIELD_BYTES)
        except ServiceError:
            raise
        except Exception as error:  # Starlette's MultiPartException and friends: the body is malformed or too big
            status = 413 if "size" in str(error).lower() or "too" in str(error).lower() else 400
            detail = (f"at most {settings.max_files} files of {settings.max_upload_bytes:,} bytes and {MAX_FORM_FIELDS} "
                      f"other fields of {MAX_FORM_FIELD_BYTES:,} bytes per request"
                      if status == 413 else f"cannot read the upload ({error})")
            raise ServiceError(status, detail) from error
        files = [item for item in form.getlist(field_name) if hasattr(item, "read")]
        if not files:
            raise ServiceError(400, f"no file in the field {field_name!r} (fields sent: {sorted(set(form.keys()))})")
        if len(files) > limit:
            raise ServiceError(413, f"{len(files)} files sent; at most {limit} per request")
        contents = []
        for number, upload in enumerate(files, 1):
            data = await upload.read(settings.max_upload_bytes + 1)
            if len(data) > settings.max_upload_bytes:
                raise ServiceError(413, f"file {number} is over {settings.max_upload_bytes} bytes", file=_label(upload, number))
            contents.append((_label(upload, number), data))
        return contents

    async def decode(self, name: str, data: bytes) -> ModelInput | ImageReadError:
        """Decode one upload in the decoding pool; an unreadable one gives its error."""
        work = partial(decode_bytes, data, name, self.loaded.preprocessing, max_pixels=self.settings.max_pixels)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.decoding, work)
        except ImageReadError as error:
            return error

    async def decoded_upload(self, name: str, data: bytes) -> ModelInput:
        """One upload decoded, or a 422 that names it."""
        decoded = await self.decode(name, data)
        if isinstance(decoded, ImageReadError):
            raise ServiceError(422, str(decoded), file=name)
        return decoded

    async def classify_images(self, named: list[tuple[str, bytes]], ids: list[str]) -> list[dict]:
        """Rows for images (name for errors, bytes), with these ids, in order."""
        decoded = await asyncio.gather(*(self.decode(name, data) for name, data in named))
        batch = DecodedBatch.of([CatalogRow(row_id, None) for row_id in ids], decoded, self.loaded.preprocessing.image_size)
        good = self.classifier.decoded_well(batch)
        scores = Scores.missing(len(named), len(self.loaded.classes))
        if good.any():
            scores[good] = await self.batcher.scores(batch.images[good])
        rows = self.classifier.build_rows(batch, scores)
        for row in rows:
            del row["file"]
        return rows

    async def classify_positions(self, parsed: list[SkyPosition], survey: str) -> list[dict]:
        """Rows for sky positions, whose cutouts are fetched from `survey` (and cached)."""
        from galaxymorph.remote import SURVEYS, CutoutCache, CutoutService, fetch_cutouts

        if survey not in SURVEYS:
            raise ServiceError(422, f"survey must be one of {SURVEYS}")
        service = CutoutService(survey)
        async with self.fetching:  # cancelled with its request when that times out
            results = [result async for result in fetch_cutouts(parsed, service, CutoutCache.default())]
        named = [(r.position.id, r.file.read_bytes() if r.file else b"") for r in results]
        rows = await self.classify_images(named, [position.id for position in parsed])
        for row, position, result in zip(rows, parsed, results):  # in order: ids may repeat
            row.update(ra=position.ra, dec=position.dec)
            row["error"] = result.error or row["error"]
        return rows

    async def explanation_png(self, name: str, data: bytes, method: str) -> bytes:
        """The explanation figure of one upload."""
        from galaxymorph.explain import METHODS, explain

        if method not in METHODS:
            raise ServiceError(422, f"method must be one of {METHODS}")
        decoded = await self.decoded_upload(name, data)
        return await self.within_time(asyncio.to_thread(lambda: explain(self.loaded, decoded.pixels, method=method).png(name)))

    async def similar(self, request: Request) -> dict:
        """The neighbours in the index of an upload (multipart `file`) or of an indexed galaxy (JSON
        `{"id": ...}`), `?k=` of them (at most 100), each with the address of its thumbnail."""
        if self.index is None:
            raise ServiceError(404, "this service has no index; start it with `galaxymorph serve --index EMBEDDINGS`")
        try:
            k = int(request.query_params.get("k", 10))
        except ValueError:
            raise ServiceError(422, "k must be a whole number") from None
        if not 1 <= k <= 100:
            raise ServiceError(422, "k must be 1 to 100")
        if request.headers.get("content-type", "").startswith("application/json"):
            asked = _strict_json(await request.body())
            query = asked.get("id") if isinstance(asked, dict) else None
            if not isinstance(query, str) or query not in self.index.rows_of_id:
                raise ServiceError(422, 'send {"id": ID} with an id of the index, or an image as multipart `file`')
            vectors, own = self.index.query_vectors([query])
        else:
            ((query, data),) = await self.uploads(request, "file", 1)
            decoded = await self.decoded_upload(query, data)
            vectors, own = await asyncio.to_thread(self.classifier.embeddings, decoded.pixels[None]), [[]]
        rows, distances = await asyncio.to_thread(self.index.search, vectors, k, own)
        return {"query": query, "neighbours": [
            {"rank": rank, "id": self.index.ids[row], "distance": float(distance), "thumbnail": f"/v1/thumbnails/{row}"}
            for rank, (row, distance) in enumerate(zip(rows[0], distances[0]), 1)]}

    async def thumbnail(self, row: int) -> bytes:
        """A JPEG of what the model sees of the index's `row`: only files that the index lists are read."""
        if self.index is None or not 0 <= row < len(self.index.files):
            raise ServiceError(404, "no such row in the index")
        file = self.index.files[row]

        def render() -> bytes:
            return thumbnail_jpeg(read_model_input(file, self.loaded.preprocessing, max_pixels=self.settings.max_pixels).pixels)

        try:
            return await asyncio.get_running_loop().run_in_executor(self.decoding, render)
        except ImageReadError as error:
            raise ServiceError(404, f"index row {row}: {error.reason}") from None

    async def within_time(self, work):
        """Await `work`, or answer 504 after the request timeout."""
        try:
            return await asyncio.wait_for(work, self.settings.request_timeout)
        except asyncio.TimeoutError:
            raise ServiceError(504, f"request took longer than {self.settings.request_timeout:g} s") from None

    def parse_positions(self, positions: object) -> list[SkyPosition]:
        """A JSON list of {"ra", "dec"[, "id"]}, checked item by item."""
        if not isinstance(positions, list) or not positions or not all(isinstance(p, dict) for p in positions):
            raise ServiceError(422, 'send a JSON list of one or more {"ra": degrees, "dec": degrees}')
        if len(positions) > self.settings.max_files:
            raise ServiceError(413, f"{len(positions)} positions sent; at most {self.settings.max_files} per request")
        parsed = []
        for number, item in enumerate(positions, 1):
            try:
                if any(isinstance(item.get(axis), bool) or not isinstance(item.get(axis), (int, float)) for axis in ("ra", "dec")):
                    raise ValueError
                ra, dec = sky_position_degrees(float(item["ra"]), float(item["dec"]))
            except (ValueError, OverflowError):
                raise ServiceError(422, f"position {number} needs finite numbers 'ra' and 'dec' (degrees)") from None
            row_id = item.get("id", number)
            parsed.append(SkyPosition(row_id if isinstance(row_id, str) else json.dumps(row_id)[:200], ra, dec, {}))
        return parsed

    def model_descriptions(self) -> dict:
        """The model being served, its back-end, and every bundled model."""
        described = {name: load_model(name) for name in bundled_models()} | {self.loaded.name: self.loaded}
        return {"serving": self.loaded.name, "backend": self.classifier.backend,
                "index": len(self.index.ids) if self.index is not None else 0, "models": [
            {"name": name, "classes": list(m.classes), "preprocessing": m.preprocessing.to_dict(),
             "metrics": m.metadata.get("metrics", {}), "calibration": m.metadata.get("calibration", {})}
            for name, m in described.items()]}


def create_app(settings: ServiceSettings = ServiceSettings(), loaded: LoadedModel | None = None) -> FastAPI:
    """The FastAPI application serving one model."""
    service = Service(settings, loaded or load_model(settings.model))
    # /docs and /redoc with their scripts and styles served from the package: they work offline.
    app = FastAPIOffline(title="galaxymorph", summary="Galaxy morphology from survey images", version="1")
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, timeout=settings.body_timeout)
    app.add_exception_handler(ServiceError, _service_error)
    model_descriptions = service.model_descriptions()

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the model is loaded."""
        return {"status": "ok", "model": service.loaded.name}

    @app.get("/v1/models")
    async def models() -> dict:
        """The model being served and its inference back-end, and the bundled models: classes, preprocessing, metrics."""
        return model_descriptions

    @app.post("/v1/classify")
    async def classify(request: Request) -> JSONResponse:
        """Multipart `files` (one or several images), or a JSON list of {"ra", "dec"[, "id"]} (cutouts
        fetched from `?survey=sdss|legacy`): the same fields as the CLI catalog, one result per
        image in the order sent."""
        service.check_key(request)
        if request.headers.get("content-type", "").startswith("application/json"):
            positions = service.parse_positions(_strict_json(await request.body()))
            survey = request.query_params.get("survey", DEFAULT_SURVEY)
            rows = await service.within_time(service.classify_positions(positions, survey))
        else:
            named = await service.uploads(request, "files", settings.max_files)
            rows = await service.within_time(service.classify_images(named, [file_id(name) for name, _ in named]))
        if all(row["error"] for row in rows):  # an upload or a list of positions, alike
            raise ServiceError(422, "no image could be read", results=_json_safe(rows))
        return JSONResponse({"model": service.loaded.name, "results": _json_safe(rows)})

    @app.post("/v1/explain", response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def explain(request: Request) -> Response:
        """Multipart `file` (one image) and optional form field `method`: the overlay PNG."""
        service.check_key(request)
        ((name, data),) = await service.uploads(request, "file", 1)
        method = (await request.form()).get("method") or "gradcam"
        return Response(await service.explanation_png(name, data, method), media_type="image/png")

    @app.post("/v1/similar")
    async def similar(request: Request) -> dict:
        """The galaxies of the served index most like an upload (multipart `file`) or an indexed one
        (JSON `{"id": ...}`); `?k=` of them, nearest first, each with its thumbnail's address."""
        service.check_key(request)
        return await service.within_time(service.similar(request))

    @app.get("/v1/thumbnails/{row}", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(request: Request, row: int) -> Response:
        """What the model sees of a galaxy of the served index (its row in the index)."""
        service.check_key(request)
        return Response(await service.thumbnail(row), media_type="image/jpeg")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        """The page: drop images or type coordinates."""
        return resources.files("galaxymorph").joinpath("service_page.html").read_text()

    return app


MAX_FORM_FIELDS = 16
MAX_FORM_FIELD_BYTES = 64 << 10


async def _service_error(_: Request, error: ServiceError) -> JSONResponse:
    return _error_response(error)


def _error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse({"error": str(error), **error.details}, status_code=error.status)


def _strict_json(body: bytes) -> object:
    """Standard JSON only: NaN, Infinity, numbers beyond floating point and deep nesting are a 400."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    try:
        value = json.loads(body, parse_constant=refuse)
    except RecursionError:
        raise ServiceError(400, "body is not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ServiceError(400, f"body is not valid JSON ({error})") from None
    return value


def _served_index(path: str, loaded: LoadedModel):
    """The embeddings the service searches, which must come from the model it serves."""
    from galaxymorph.similarity import EmbeddingIndex

    index = EmbeddingIndex.load(path)
    if not index.made_with(loaded):
        raise ModelError(f"index {path} was made with model {index.model!r} (other weights than {loaded.name}'s); "
                         "serve that model (--model) to search it")
    return index


def _label(upload: object, number: int) -> str:
    """A client's file name is only a label in the answer (never a path); unnamed files get a number."""
    name = str(getattr(upload, "filename", "") or "").replace("\\", "/").rsplit("/", 1)[-1]
    return name[:200] or f"file-{number}"


def _json_safe(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()} for row in rows]


def server_config(settings: ServiceSettings = ServiceSettings(), *, host: str = "127.0.0.1", port: int = 8000,
                  log_level: str = "info"):
    """uvicorn's configuration for the service: keep-alive longer than uvicorn's 5 s default (a busy
    client pool reuses connections that waited that long, and a server closing them races with the
    next request; seen under load), and a deadline for each request's headers."""
    import uvicorn

    return uvicorn.Config(create_app(settings), host=host, port=port, log_level=log_level,
                          timeout_keep_alive=KEEP_ALIVE_SECONDS, http=header_deadline_protocol(settings.header_timeout))


def header_deadline_protocol(seconds: float) -> type:
    """uvicorn's HTTP/1.1 protocol, closing a connection whose client takes more than `seconds` to
    send a request's headers, counted from the connection or from the request's first byte. (A
    middleware cannot: it runs only once the headers are in.) Idle kept-alive connections are left
    to the keep-alive timeout."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline = self.loop.call_later(seconds, self._headers_late)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self.conn.their_state is h11.IDLE:
                self._deadline = self.loop.call_later(seconds, self._headers_late)
            super().data_received(data)
            if self._deadline is not None and self.conn.their_state is not h11.IDLE:
                self._deadline.cancel()
                self._deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _headers_late(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol


def serve(host: str = "127.0.0.1", port: int = 8000, settings: ServiceSettings = ServiceSettings()) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.Server(server_config(settings, host=host, port=port)).run()
