"""The cutout services astronomers already use, and how to ask them for the image of a position.

SDSS SkyServer: `{base}/SkyServerWS/ImgCutout/getjpeg?ra=&dec=&scale=&width=&height=` (gri JPEG).
DESI Legacy Survey viewer: `{base}/jpeg-cutout` or `{base}/fits-cutout` with `ra`, `dec`, `layer`,
`pixscale`, `size` (and `bands` for FITS). The default cutout (424 px at 0.396"/px, 2.8' a side)
is the framing the bundled model was trained on.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from galaxymorph.config import astro_db_host, sdss_api_key

if TYPE_CHECKING:
    from galaxymorph.remote.fetch import CutoutCache

SURVEYS = ("sdss", "legacy")
DEFAULT_SURVEY = "sdss"
DEFAULT_BASE_URLS = {"sdss": "https://skyserver.sdss.org/dr18", "legacy": "https://www.legacysurvey.org/viewer"}
IMAGE_FORMATS = ("jpeg", "fits")
MAX_WIDENINGS = 4
"""A field 16 times wider than asked is as far as a truncated galaxy is followed."""
CREDENTIAL_HEADER = "X-Auth-Token"
"""How the SDSS key travels: SciServer's token header (never in the URL, so never in a log line)."""


@dataclass(frozen=True)
class CutoutSettings:
    """What cutout to ask for: side in pixels, pixel scale, format, and the Legacy Survey layer and bands."""

    size: int = 424
    pixel_scale: float = 0.396
    image_format: str = "jpeg"
    layer: str = "ls-dr10"
    bands: str = "grz"

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 3000:
            raise ValueError(f"cutout size must be 8 to 3000 px, got {self.size}")
        if not self.pixel_scale > 0:
            raise ValueError(f"pixel scale must be positive, got {self.pixel_scale}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")


@dataclass(frozen=True)
class FetchOptions:
    """Politeness and patience: concurrent requests, requests a second per host (0: no limit),
    seconds before a request times out, retries after the first attempt, first backoff delay; and
    how many times a cutout whose galaxy runs off its edge is asked again at twice the field (the
    pixel scale doubled, the same size in pixels)."""

    concurrency: int = 8
    rate_limit: float = 10.0
    timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 60.0
    widen_truncated: int = 0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if not 0 <= self.widen_truncated <= MAX_WIDENINGS:
            raise ValueError(f"widen_truncated must be 0 to {MAX_WIDENINGS}, got {self.widen_truncated}")
        if self.rate_limit < 0 or self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ValueError("rate limit, retries and backoff must be >= 0 and the timeout positive")


@dataclass(frozen=True)
class Cutouts:
    """Where workers fetch the cutouts of rows that give sky positions instead of files, and the
    columns to read (without an id column, a row's id is its "ra,dec" text)."""

    service: CutoutService
    cache: CutoutCache
    options: FetchOptions = FetchOptions()
    ra_column: str = "ra"
    dec_column: str = "dec"
    id_column: str | None = None

    def what_is_asked(self) -> dict:
        """The survey and cutout settings, and the widenings: what a resumed run must ask for again."""
        return {"survey": self.service.survey, **asdict(self.service.settings), "widen_truncated": self.options.widen_truncated}


@dataclass(frozen=True)
class CutoutRequest:
    """One GET request for one position; `key` names it in the cache (service, URL and parameters)."""

    survey: str
    url: str
    params: tuple[tuple[str, str], ...]
    suffix: str

    @property
    def key(self) -> str:
        text = "\n".join([self.survey, self.url, *(f"{name}={value}" for name, value in self.params)])
        return hashlib.sha1(text.encode()).hexdigest()


class _Credential:
    """A secret that never shows itself in a repr, a log line or an error message."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<credential hidden>"

    __str__ = __repr__


class CutoutService:
    """A survey's cutout endpoint: its base URL (`ASTRO_DB_HOST` overrides the host), credential and requests."""

    def __init__(self, survey: str, settings: CutoutSettings = CutoutSettings(), *, base_url: str | None = None) -> None:
        if survey not in SURVEYS:
            raise ValueError(f"survey must be one of {SURVEYS}, got {survey!r}")
        if survey == "sdss" and settings.image_format != "jpeg":
            raise ValueError("the SDSS cutout service gives JPEG only; use --survey legacy for FITS")
        self.survey = survey
        self.settings = settings
        self.base_url = resolve_base_url(base_url or DEFAULT_BASE_URLS[survey], astro_db_host())
        self._credential = _sdss_credential() if survey == "sdss" else None
        if self._credential and _sent_in_the_clear(self.base_url):
            _warn_once(f"SDSS_API_KEY would be sent over plain HTTP to {urlsplit(self.base_url).hostname}: "
                       "use https:// in ASTRO_DB_HOST or --base-url")

    def __repr__(self) -> str:
        return f"CutoutService({self.survey!r}, base_url={self.base_url!r})"

    def headers(self) -> dict[str, str]:
        return {CREDENTIAL_HEADER: self._credential.reveal()} if self._credential else {}

    def request(self, ra: float, dec: float, *, widening: int = 0) -> CutoutRequest:
        """The request for a position's cutout; `widening` times twice the field (the pixel scale
        doubled each time, the same size in pixels)."""
        s = self.settings
        position = (("ra", f"{ra:.7f}"), ("dec", f"{dec:.7f}"))
        pixel_scale = f"{s.pixel_scale * 2 ** widening:g}"
        if self.survey == "sdss":
            return CutoutRequest(self.survey, f"{self.base_url}/SkyServerWS/ImgCutout/getjpeg",
                                 position + (("scale", pixel_scale), ("width", str(s.size)),
                                             ("height", str(s.size))), ".jpeg")
        params = position + (("layer", s.layer), ("pixscale", pixel_scale), ("size", str(s.size)))
        if s.image_format == "fits":
            params += (("bands", s.bands),)
        return CutoutRequest(self.survey, f"{self.base_url}/{s.image_format}-cutout", params, f".{s.image_format}")


def resolve_base_url(base_url: str, host_override: str | None) -> str:
    """`host_override` (`ASTRO_DB_HOST`) as a full URL replaces the base; as a host name (with an
    optional port) it replaces only the host. Either must give an http(s) URL with a host."""
    if not host_override:
        return _checked_url(base_url.rstrip("/"), "the base URL")
    if "://" in host_override:
        return _checked_url(host_override.rstrip("/"), f"ASTRO_DB_HOST={host_override!r}")
    parts = urlsplit(base_url)
    return _checked_url(urlunsplit((parts.scheme, host_override, parts.path, "", "")).rstrip("/"),
                        f"ASTRO_DB_HOST={host_override!r}")


def _checked_url(url: str, source: str) -> str:
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ValueError(f"{source} is not a host name or an http(s) URL ({error})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{source} is not a host name or an http(s) URL (it gives {url!r})")
    return url


def _sent_in_the_clear(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1")


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def _sdss_credential() -> _Credential | None:
    key = sdss_api_key()
    if key is None:
        _warn_once("SDSS_API_KEY is not set: using the public, unauthenticated SDSS cutout service")
        return None
    if not (key.isascii() and key.isprintable()):
        raise ValueError("SDSS_API_KEY holds characters an HTTP header cannot carry (non-ASCII, or control "
                         "characters such as a line break): set it to the key alone")
    return _Credential(key)
