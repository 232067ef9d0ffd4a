"""Time and size of the HTML report for 500 galaxies with labels (goal: under a minute, under 25 MB).

Usage: python benchmarks/report.py [--galaxies 500]

The galaxies are the first gz1-sdss validation-split rows (the test split stays untouched); they
are classified first (not timed), then `galaxymorph report` is timed with the labels, which adds
the evaluation figures and the Grad-CAM overlays of the misclassified gallery.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from galaxymorph.catalog import CatalogRow, read_labelled_catalog
from galaxymorph.models import load_model
from galaxymorph.report import write_report
from galaxymorph.prediction import classify

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "labels.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=500)
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    args = parser.parse_args()
    loaded = load_model("galaxynet")
    validation = set(loaded.metadata["split"]["val"])
    catalog = read_labelled_catalog(args.labels)
    rows = [CatalogRow(i, f) for i, f in zip(catalog.ids, catalog.files) if i in validation][:args.galaxies]
    with tempfile.TemporaryDirectory() as scratch:
        morphology = Path(scratch) / "morphology.csv"
        classify(rows, morphology, model=loaded)
        started = time.perf_counter()
        report = write_report(morphology, Path(scratch) / "report.html", labels=args.labels, model=loaded)
        seconds = time.perf_counter() - started
        size = report.stat().st_size
    print(f"# report, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores")
    print(f"{len(rows)} galaxies with labels: written in {seconds:.1f} s (goal < 60 s), {size / 1e6:.2f} MB (goal < 25 MB)")


if __name__ == "__main__":
    main()
