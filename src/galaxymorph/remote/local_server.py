"""A local cutout server that speaks the SDSS SkyServer and Legacy Survey viewer protocols.

It answers `.../SkyServerWS/ImgCutout/getjpeg`, `.../jpeg-cutout` and `.../fits-cutout` with real
images (synthetic galaxies, the same for the same position), so that fetching can be tested,
benchmarked and demonstrated without the internet. It can add latency and inject the faults a real
network has, on a chosen share of requests' first attempts: slow answers, 500s, 429 with Retry-After,
truncated bodies, HTML error pages with status 200 and dropped connections. Positions south of
`refused_below_dec` are answered 404, as outside a survey's footprint. By default every cutout is
framed to its galaxy whatever its pixel scale; with `galaxy_field` galaxies have an angular size
instead, so a cutout of too small a field cuts the galaxy off and a wider one holds it whole.

    with LocalCutoutServer(fault_rate=0.3) as server:
        os.environ["ASTRO_DB_HOST"] = server.url
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from PIL import Image

from galaxymorph.sources.synthetic import KINDS, synthetic_galaxy

FAULTS = ("slow", "error_500", "too_many_requests", "truncated", "html_200", "dropped")
VARIANTS = 16
"""Distinct galaxies per kind; positions map onto them by a hash."""


@dataclass
class ServerLog:
    """What the server saw: every request's path, query and credential header, and attempts per request."""

    requests: list[tuple[str, dict, str | None]] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalCutoutServer:
    """Context manager running the server on 127.0.0.1 in a background thread; `url` is its base."""

    def __init__(self, *, port: int = 0, latency: float = 0.0, fault_rate: float = 0.0,
                 faults: tuple[str, ...] = FAULTS, faulty_attempts: int = 1, slow_seconds: float = 3.0,
                 retry_after: int = 1, refused_below_dec: float = -89.0, galaxy_field: float | None = None,
                 seed: int = 0) -> None:
        """`galaxy_field`: arcseconds across a cutout that frames each galaxy as the default one does
        (the galaxy spans about 10-30% of it); None: every cutout is framed so, whatever its scale."""
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.latency, self.fault_rate, self.faults, self.faulty_attempts = latency, fault_rate, tuple(faults), faulty_attempts
        self.slow_seconds, self.retry_after = slow_seconds, retry_after
        if galaxy_field is not None and not galaxy_field > 0:
            raise ValueError(f"galaxy_field must be positive arcseconds, got {galaxy_field}")
        self.refused_below_dec, self.galaxy_field, self.seed = refused_below_dec, galaxy_field, seed
        self.log = ServerLog()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="cutout-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LocalCutoutServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fault_for(self, key: str, attempt: int) -> str | None:
        """The fault injected into this attempt at a request: on `fault_rate` of the requests, into
        their first `faulty_attempts` attempts."""
        if attempt > self.faulty_attempts or not self.faults:
            return None
        digest = hashlib.sha1(f"{self.seed}:{key}".encode()).digest()
        if int.from_bytes(digest[:4], "big") / 2**32 >= self.fault_rate:
            return None
        return self.faults[digest[4] % len(self.faults)]


def cutout_bytes(ra: float, dec: float, size: int, image_format: str, pixel_scale: float = 0.262,
                 galaxy_field: float | None = None) -> bytes:
    """The image the server gives for a position: a synthetic galaxy, JPEG or 3-band FITS. FITS is
    written as the Legacy Survey writes it: the bottom row first, with a TAN WCS (north up, east
    left) centred on the position at `pixel_scale` arcsec per pixel. `galaxy_field`: as the server's."""
    digest = hashlib.sha1(f"{ra:.5f},{dec:.5f}".encode()).digest()
    kind, variant = KINDS[digest[0] % len(KINDS)], digest[1] % VARIANTS
    galaxy_scale = None if galaxy_field is None else round(galaxy_field / pixel_scale / 128, 6)
    rendered = _rendered(kind, variant, size, image_format, galaxy_scale)
    if image_format != "fits":
        return rendered
    from astropy.io import fits
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype, wcs.wcs.crval = ["RA---TAN", "DEC--TAN"], [ra, dec]
    wcs.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    wcs.wcs.cd = [[-pixel_scale / 3600, 0.0], [0.0, pixel_scale / 3600]]
    buffer = io.BytesIO()
    fits.PrimaryHDU(rendered[:, ::-1, :], header=wcs.to_header()).writeto(buffer)
    return buffer.getvalue()


def prerender(size: int, image_format: str = "jpeg") -> None:
    """Render every galaxy the server can give at this size now, so that answers are fast."""
    for kind in KINDS:
        for variant in range(VARIANTS):
            _rendered(kind, variant, size, image_format)


@lru_cache(maxsize=4 * VARIANTS)
def _rendered(kind: str, variant: int, size: int, image_format: str, galaxy_scale: float | None = None) -> bytes | np.ndarray:
    """A synthetic galaxy as JPEG bytes, or for FITS as a 3-band cube (3, Y, X), top row first."""
    pixels = synthetic_galaxy(kind, np.random.default_rng(variant), size=size, scale=galaxy_scale)
    if image_format == "fits":
        return np.moveaxis(pixels.astype(np.float32) / 255.0, -1, 0)  # like grz cutouts
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _handler_for(server: LocalCutoutServer) -> type[BaseHTTPRequestHandler]:
    class CutoutHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms ACK stall

        def log_message(self, format: str, *args: object) -> None:  # quiet: tests read `server.log`
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            key = f"{parts.path}?{'&'.join(f'{k}={v}' for k, v in sorted(query.items()))}"
            with server.log.lock:
                server.log.requests.append((parts.path, query, self.headers.get("X-Auth-Token")))
                server.log.attempts[key] += 1
                attempt = server.log.attempts[key]
            if server.latency:
                time.sleep(server.latency)
            fault = server.fault_for(key, attempt)
            if fault:
                with server.log.lock:
                    server.log.faults[fault] += 1
            if fault == "dropped":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault == "slow":
                time.sleep(server.slow_seconds)
            if fault == "error_500":
                return self._send(500, b"Internal Server Error", "text/plain")
            if fault == "too_many_requests":
                return self._send(429, b"Too Many Requests", "text/plain", {"Retry-After": str(server.retry_after)})
            if fault == "html_200":
                return self._send(200, b"<html><body>Service temporarily unavailable</body></html>", "text/html")
            image_format, size = self._route(parts.path, query)
            if image_format is None:
                return self._send(404 if size == 404 else 400, b"bad request", "text/plain")
            ra, dec = float(query["ra"]), float(query["dec"])
            if dec < server.refused_below_dec:
                return self._send(404, b"no data at this position", "text/plain")
            try:
                pixel_scale = float(query.get("pixscale", query.get("scale", 0.262)))
            except ValueError:
                return self._send(400, b"bad pixel scale", "text/plain")
            if not pixel_scale > 0:
                return self._send(400, b"bad pixel scale", "text/plain")
            body = cutout_bytes(ra, dec, size, image_format, pixel_scale, server.galaxy_field)
            if fault == "truncated":
                body = body[: len(body) // 2]
            self._send(200, body, "application/fits" if image_format == "fits" else "image/jpeg")

        def _route(self, path: str, query: dict) -> tuple[str | None, int]:
            try:
                float(query["ra"]), float(query["dec"])
                if path.endswith("/SkyServerWS/ImgCutout/getjpeg"):
                    return "jpeg", int(query.get("width", 64))
                for image_format in ("jpeg", "fits"):
                    if path.endswith(f"/{image_format}-cutout"):
                        return image_format, int(query.get("size", 256))
            except (KeyError, ValueError):
                return None, 400
            return None, 404

        def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timed out) first
                self.close_connection = True

    return CutoutHandler
