"""Does a galaxy read from FITS wind the same way as from its JPEG?

Usage: python benchmarks/fits_orientation.py [--split test] [--model galaxynet_ensemble]

Each clockwise or anticlockwise spiral of the split is written to FITS the standard way (bottom row
first, as astropy and ds9 expect: `fits.PrimaryHDU(pixels[::-1].transpose(2, 0, 1))`) and both files
are classified; the winding is the larger of p_spiral_clockwise and p_spiral_anticlockwise. A FITS
reader that took the first row for the top would mirror every galaxy and reverse its winding.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image

from galaxymorph.catalog import CatalogRow, read_labelled_catalog
from galaxymorph.training.data import rows_of_split
from galaxymorph.models import load_model
from galaxymorph.prediction import PredictOptions, predict

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "labels.csv"
WINDINGS = ("spiral_clockwise", "spiral_anticlockwise")


def windings(rows: list[CatalogRow], model) -> list[str]:
    results = [row for batch in predict(rows, model, options=PredictOptions(workers=2)) for row in batch]
    return [max(WINDINGS, key=lambda name: row[f"p_{name}"]) for row in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--model", default="galaxynet_ensemble")
    args = parser.parse_args()
    loaded = load_model(args.model)
    catalog = read_labelled_catalog(args.labels)
    spirals = [(catalog.ids[i], catalog.files[i], catalog.labels[i])
               for i in rows_of_split(catalog.ids, loaded, args.split, args.labels) if catalog.labels[i] in WINDINGS]
    with tempfile.TemporaryDirectory() as folder:
        written = []
        for row_id, file, _ in spirals:
            pixels = np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255
            path = Path(folder) / f"{row_id}.fits"
            fits.PrimaryHDU(np.ascontiguousarray(pixels[::-1].transpose(2, 0, 1))).writeto(path)
            written.append(CatalogRow(row_id, path))
        from_fits = windings(written, loaded)
    from_jpeg = windings([CatalogRow(i, f) for i, f, _ in spirals], loaded)
    same = np.mean([a == b for a, b in zip(from_jpeg, from_fits)])
    labelled = np.mean([a == label for a, (_, _, label) in zip(from_fits, spirals)])
    print(f"{len(spirals)} clockwise/anticlockwise spirals of the {args.split} split, model {loaded.name}: "
          f"FITS winding matches the JPEG's for {same:.1%}; matches the label for {labelled:.1%} "
          f"(JPEG: {np.mean([a == label for a, (_, _, label) in zip(from_jpeg, spirals)]):.1%})")


if __name__ == "__main__":
    main()
