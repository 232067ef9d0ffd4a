"""Images from remote survey services: cutouts of sky positions, fetched asynchronously and cached.

What to ask for and how (`services`: the services, `CutoutSettings`, `FetchOptions`, `Cutouts`) loads
without the HTTP client; the fetcher (`fetch`, with httpx) loads when one of its names is first used.
"""

from galaxymorph.remote.services import DEFAULT_SURVEY, SURVEYS, CutoutService, CutoutSettings, Cutouts, FetchOptions

_FETCH_NAMES = ("CutoutCache", "FetchResult", "fetch_catalog", "fetch_cutouts", "fetched_rows", "iter_fetched",
                "iter_fetched_rows")

__all__ = ["DEFAULT_SURVEY", "SURVEYS", "CutoutCache", "CutoutService", "CutoutSettings", "Cutouts", "FetchOptions",
           "FetchResult", "fetch_catalog", "fetch_cutouts", "fetched_rows", "iter_fetched", "iter_fetched_rows"]


def __getattr__(name: str):
    if name not in _FETCH_NAMES:
        raise AttributeError(f"module 'galaxymorph.remote' has no attribute {name!r}")
    from galaxymorph.remote import fetch

    return getattr(fetch, name)
