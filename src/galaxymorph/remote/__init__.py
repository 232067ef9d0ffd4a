"""Images from remote survey services: cutouts of sky positions, fetched asynchronously and cached."""

from galaxymorph.remote.fetch import (CutoutCache, Cutouts, FetchOptions, FetchResult, fetch_catalog, fetch_cutouts,
                                      fetched_rows, iter_fetched, iter_fetched_rows)
from galaxymorph.remote.services import SURVEYS, CutoutService, CutoutSettings

__all__ = ["SURVEYS", "CutoutCache", "CutoutService", "Cutouts", "CutoutSettings", "FetchOptions", "FetchResult",
           "fetch_catalog", "fetch_cutouts", "fetched_rows", "iter_fetched", "iter_fetched_rows"]
