"""Does the framing step frame a galaxy the same when the cutout is re-framed? Framing only, no labels.

Usage: python benchmarks/framing_consistency.py [--split val] [--galaxies 150] [--peak-fractions 0 0.05 0.1]

For each galaxy of the split, the crop that framing picks on the unchanged cutout is compared with
the crop it picks on the same cutout re-framed by `benchmarks/robustness.py` (the galaxy filling 5%,
15%, 40% or 80% of the frame). In units of the galaxy, the two crops should be the same: the ratio
printed is (crop side on the re-framed cutout) / (crop side on the unchanged one x zoom), 1 when
consistent. Each peak fraction is a value of `framing.PEAK_FRACTION` (0: the threshold is set by
the noise alone).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness import DEFAULT_LABELS, SIZE, fill, galaxy_diameter  # noqa: E402

from galaxymorph.catalog import read_labelled_catalog  # noqa: E402
from galaxymorph.models import load_model  # noqa: E402
from galaxymorph.preprocess import decode, framing  # noqa: E402

FILLS = (0.05, 0.15, 0.40, 0.80)


def crop_share(image: np.ndarray, preprocessing) -> tuple[float, bool]:
    """The side of the crop framing picks, as a share of the image side, and whether it found a galaxy."""
    picked = {}

    def recording(width, height, *rest):
        box, found, truncated = frame_box(width, height, *rest)
        picked.update(share=(box[2] - box[0]) / width, found=found)
        return box, found, truncated

    frame_box, decode.frame_box = decode.frame_box, recording
    try:
        decode.decode_array(image, "cutout", preprocessing)
    finally:
        decode.frame_box = frame_box
    return picked["share"], picked["found"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--galaxies", type=int, default=150)
    parser.add_argument("--peak-fractions", type=float, nargs="+", default=[0.0, 0.05, 0.1])
    args = parser.parse_args()
    loaded = load_model("galaxynet")
    wanted = set(loaded.metadata["split"][args.split])
    catalog = read_labelled_catalog(DEFAULT_LABELS)
    files = [file for row_id, file in zip(catalog.ids, catalog.files) if row_id in wanted][:args.galaxies]
    print(f"# framing consistency on {len(files)} gz1-sdss {args.split} cutouts")
    print("| peak fraction | fill | median ratio | 10th-90th percentile | share > 1.5x too wide | share < 0.67x |")
    print("|---|---|---|---|---|---|")
    for fraction in args.peak_fractions:
        framing.PEAK_FRACTION = fraction
        rng = np.random.default_rng(0)
        ratios = {share: [] for share in FILLS}
        for file in files:
            image = Image.open(file).convert("RGB")
            unchanged, _ = crop_share(np.asarray(image), loaded.preprocessing)
            diameter = galaxy_diameter(np.asarray(image, dtype=np.float64))
            for share in FILLS:
                zoom = share * SIZE / diameter
                reframed, found = crop_share(np.asarray(fill(image, share, rng)), loaded.preprocessing)
                ratios[share].append(reframed / (unchanged * zoom) if found else np.nan)
        for share, values in ratios.items():
            values = np.array(values)
            print(f"| {fraction:g} | {share:.0%} | {np.nanmedian(values):.3f} | {np.nanpercentile(values, 10):.3f}-"
                  f"{np.nanpercentile(values, 90):.3f} | {np.mean(values > 1.5):.3f} | {np.mean(values < 0.67):.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
