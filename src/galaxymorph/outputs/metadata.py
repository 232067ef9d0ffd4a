"""What a morphology catalog says about itself: each column's meaning and unit, and where its rows
came from (the galaxymorph version, the model and a hash of its weights, the preprocessing, the date).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

COLUMN_DESCRIPTIONS = {
    "id": "the input's id: its file name without extension, or the catalog's id",
    "file": "the image classified",
    "label": "spiral or elliptical where p_galaxy >= 0.5, else uncertain; empty where the row failed",
    "p_spiral": "probability of a disk (spiral or edge-on) rather than an elliptical, given one of the two",
    "p_spiral_std": "spread of p_spiral over the ensemble's members and test-time views",
    "p_galaxy": "probability that the object is an elliptical or a disk at all (the mass behind p_spiral)",
    "ood_score": "Mahalanobis distance from the training images in feature space, per dimension (about 1 typical)",
    "confident": ("p_spiral <= 0.1 or >= 0.9, also for a sample with as many spirals as ellipticals, members agree, "
                  "p_galaxy >= 0.9 and ood_score within the model's limit"),
    "class": "the most probable class of the model's label set",
    "galaxy_found": "framing found a central source (else the central 40% was classified)",
    "galaxy_truncated": "the central source reaches the cutout's edge, or galaxy light fills the frame",
    "error": "why the row could not be classified (its probabilities are empty)",
    "embedding": "unit vector of the model's features, averaged over the members and the 8 rotations and mirror images",
    "query": "the id or image file whose neighbours these are",
    "rank": "1 for the nearest (neighbours) or the least typical (oddities)",
    "distance": "cosine distance of the embeddings, 1 - a.b (0: the same direction)",
    "oddity": "cosine distance to the 10th nearest neighbour in the index (the larger, the lonelier)",
}
"""One line per output column, written into FITS, ECSV and Parquet outputs and CSV sidecars;
README.md's "Columns" table says the same at more length."""

POSITION_UNITS = {name.lower(): "deg" for name in ("ra", "dec", "RAJ2000", "DEJ2000", "RA_ICRS", "DE_ICRS", "RAdeg", "DEdeg")}


def column_metadata(name: str, numeric: bool) -> dict[str, str]:
    """A column's `description` and, for numeric sky positions of the input (degrees), its `unit`;
    the input's own columns are described as such."""
    if name in COLUMN_DESCRIPTIONS:
        description = COLUMN_DESCRIPTIONS[name]
    elif match := re.fullmatch(r"p_(\w+)", name):
        description = f"probability of the class {match[1]}"
    else:
        description = "the input catalog's own column"
    unit = POSITION_UNITS.get(name.lower()) if numeric else None
    return {"description": description, **({"unit": unit} if unit else {})}


def provenance(loaded, *, tta: bool = False, backend: str | None = None) -> dict:
    """Where a morphology catalog's rows come from: software and version, the model's name, the
    SHA-256 of its weights file, its classes and preprocessing, test-time augmentation, the
    inference back-end (where known), what `confident` asked, and when."""
    from galaxymorph.config import CONFIDENT_MARGIN, CONFIDENT_MAX_STD, CONFIDENT_MIN_GALAXY
    from galaxymorph.labels import calibrated_spiral_share

    confident = {"p_spiral_margin": CONFIDENT_MARGIN, "calibrated_spiral_share": calibrated_spiral_share(loaded.metadata),
                 "max_p_spiral_std": CONFIDENT_MAX_STD, "min_p_galaxy": CONFIDENT_MIN_GALAXY,
                 "ood_score_limit": loaded.metadata.get("typicality", {}).get("limit")}
    return _stamped(model=loaded.name, weights_sha256=loaded.weights_sha256 or "not saved",
                    classes=list(loaded.classes), preprocessing=loaded.preprocessing.to_dict(), tta=tta,
                    **({"backend": backend} if backend else {}), confident=confident)


def fetch_provenance(service, options) -> dict:
    """Where a fetch manifest's cutouts come from: the survey, its URL and cutout settings, and when."""
    from dataclasses import asdict

    return _stamped(survey=service.survey, base_url=service.base_url, cutout=asdict(service.settings),
                    fetch=asdict(options))


def _stamped(**details) -> dict:
    """`details` after the software, its version and the time (UTC)."""
    from importlib.metadata import version

    return {"software": "galaxymorph", "version": version("galaxymorph"),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **details}
