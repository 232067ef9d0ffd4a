"""The cutout services astronomers already use, and how to ask them for the image of a position.

SDSS SkyServer: `{base}/SkyServerWS/ImgCutout/getjpeg?ra=&dec=&scale=&width=&height=` (gri JPEG).
DESI Legacy Survey viewer: `{base}/jpeg-cutout` or `{base}/fits-cutout` with `ra`, `dec`, `layer`,
`pixscale`, `size` (and `bands` for FITS). The default cutout (424 px at 0.396"/px, 2.8' a side)
is the framing the bundled model was trained on.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from galaxymorph.config import astro_db_host, sdss_api_key

SURVEYS = ("sdss", "legacy")
DEFAULT_BASE_URLS = {"sdss": "https://skyserver.sdss.org/dr18", "legacy": "https://www.legacysurvey.org/viewer"}
IMAGE_FORMATS = ("jpeg", "fits")
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


_warned_no_key = False


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

    def __repr__(self) -> str:
        return f"CutoutService({self.survey!r}, base_url={self.base_url!r})"

    def headers(self) -> dict[str, str]:
        return {CREDENTIAL_HEADER: self._credential.reveal()} if self._credential else {}

    def request(self, ra: float, dec: float) -> CutoutRequest:
        s = self.settings
        position = (("ra", f"{ra:.7f}"), ("dec", f"{dec:.7f}"))
        if self.survey == "sdss":
            return CutoutRequest(self.survey, f"{self.base_url}/SkyServerWS/ImgCutout/getjpeg",
                                 position + (("scale", f"{s.pixel_scale:g}"), ("width", str(s.size)),
                                             ("height", str(s.size))), ".jpeg")
        params = position + (("layer", s.layer), ("pixscale", f"{s.pixel_scale:g}"), ("size", str(s.size)))
        if s.image_format == "fits":
            params += (("bands", s.bands),)
        return CutoutRequest(self.survey, f"{self.base_url}/{s.image_format}-cutout", params, f".{s.image_format}")


def resolve_base_url(base_url: str, host_override: str | None) -> str:
    """`host_override` as a full URL replaces the base; as a host name it replaces only the host."""
    if not host_override:
        return base_url.rstrip("/")
    if "://" in host_override:
        return host_override.rstrip("/")
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, host_override, parts.path, "", "")).rstrip("/")


def _sdss_credential() -> _Credential | None:
    global _warned_no_key
    key = sdss_api_key()
    if key is None and not _warned_no_key:
        _warned_no_key = True
        warnings.warn("SDSS_API_KEY is not set: using the public, unauthenticated SDSS cutout service",
                      stacklevel=3)
    return _Credential(key) if key else None
