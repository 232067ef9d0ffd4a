"""How much the bundled models lose when the test split is re-framed like other surveys' cutouts.

Usage: python benchmarks/robustness.py [--split test] [--models galaxynet seed]

Each test-split cutout of gz1-sdss is re-framed and written to a temporary folder, then classified
through the normal path. Re-framings: the galaxy filling 5%, 15%, 40% and 80% of the frame (its
diameter, twice the radius holding 90% of its light, as a share of the side; zooming in crops,
zooming out shrinks the whole cutout and pads it with sky pixels drawn from its own border), the
whole cutout downsampled to 48 px, upsampled 4x, saved at JPEG quality 30, and a different colour
stretch (gamma 0.5). The galaxy's size is measured here with a segmentation of its own (1-sigma
isophote, full resolution), deliberately independent of the framing step that the models use, so
that the benchmark does not grade the framing with its own ruler.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from galaxymorph.catalog import CatalogRow, read_labelled_catalog
from galaxymorph.labels import binary_label
from galaxymorph.metrics import binary_summary
from galaxymorph.models import load_model
from galaxymorph.prediction import PredictOptions, predict

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "labels.csv"
SIZE = 423


def galaxy_diameter(pixels: np.ndarray) -> float:
    """Twice the radius holding 90% of the light of the source connected to the centre, in pixels."""
    intensity = pixels.mean(axis=2)
    background = np.median(intensity)
    noise = max(1.4826 * np.median(np.abs(intensity - background)), 1.0)
    padded = np.pad(intensity - background, 1, mode="edge")
    smoothed = sum(padded[dy:dy + intensity.shape[0], dx:dx + intensity.shape[1]] for dy in range(3) for dx in range(3)) / 9
    detected = smoothed > noise
    centre = intensity.shape[0] // 2
    region = np.zeros_like(detected)
    region[centre - 3:centre + 4, centre - 3:centre + 4] = detected[centre - 3:centre + 4, centre - 3:centre + 4]
    while True:
        padded_region = np.pad(region, 1)
        grown = detected & np.any([padded_region[dy:dy + region.shape[0], dx:dx + region.shape[1]]
                                   for dy in range(3) for dx in range(3)], axis=0)
        if (grown == region).all():
            break
        region = grown
    flux = np.where(region, np.clip(intensity - background, 0, None), 0.0)
    if flux.sum() <= 0:
        return 0.2 * intensity.shape[0]  # nothing found: assume the typical SDSS framing
    ys, xs = np.indices(flux.shape)
    x, y = (flux * xs).sum() / flux.sum(), (flux * ys).sum() / flux.sum()
    distance = np.hypot(xs - x, ys - y)[region]
    order = np.argsort(distance)
    enclosed = np.cumsum(flux[region][order]) / flux.sum()
    return 2 * max(float(distance[order][np.searchsorted(enclosed, 0.9)]), 1.0)


def fill(image: Image.Image, share: float, rng: np.random.Generator) -> Image.Image:
    """Zoom so that the galaxy's diameter is `share` of the side; the output keeps the input's size."""
    pixels = np.asarray(image, dtype=np.float64)
    zoom = share * SIZE / galaxy_diameter(pixels)
    if zoom >= 1:
        side = SIZE / zoom
        left = (SIZE - side) / 2
        return image.resize((SIZE, SIZE), Image.Resampling.BICUBIC, box=(left, left, left + side, left + side))
    small = np.asarray(image.resize((max(8, round(SIZE * zoom)),) * 2, Image.Resampling.LANCZOS), dtype=np.float64)
    canvas = sky_like(small, rng)
    offset = (SIZE - small.shape[0]) // 2
    canvas[offset:offset + small.shape[0], offset:offset + small.shape[1]] = small
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def sky_like(small: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A SIZE x SIZE canvas of sky pixels drawn from the shrunk image's own border (sources clipped),
    so that the padding has the sky level and noise of the shrunk cutout and no edge shows."""
    edge = max(2, small.shape[0] // 10)
    border = np.concatenate([small[:edge].reshape(-1, 3), small[-edge:].reshape(-1, 3),
                             small[:, :edge].reshape(-1, 3), small[:, -edge:].reshape(-1, 3)])
    intensity = border.mean(axis=1)
    level, spread = np.median(intensity), 1.4826 * np.median(np.abs(intensity - np.median(intensity)))
    sky = border[intensity <= level + 3 * max(spread, 1.0)]
    return sky[rng.integers(0, len(sky), SIZE * SIZE)].reshape(SIZE, SIZE, 3)


REFRAMINGS = {
    "unchanged": lambda image, rng: image,
    "galaxy fills 5%": lambda image, rng: fill(image, 0.05, rng),
    "galaxy fills 15%": lambda image, rng: fill(image, 0.15, rng),
    "galaxy fills 40%": lambda image, rng: fill(image, 0.40, rng),
    "galaxy fills 80%": lambda image, rng: fill(image, 0.80, rng),
    "downsampled to 48 px": lambda image, rng: image.resize((48, 48), Image.Resampling.LANCZOS),
    "upsampled 4x": lambda image, rng: image.resize((4 * SIZE, 4 * SIZE), Image.Resampling.BICUBIC),
    "JPEG quality 30": None,  # written, not transformed
    "colour stretch gamma 0.5": lambda image, rng: image.point(lambda v: round(255 * (v / 255) ** 0.5)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--models", nargs="+", default=["galaxynet", "seed"])
    parser.add_argument("--tta", action="store_true", help="classify with test-time augmentation")
    parser.add_argument("--only", nargs="+", choices=list(REFRAMINGS), help="run these re-framings alone")
    args = parser.parse_args()
    models = {name: load_model(name) for name in args.models}
    wanted = set(models[args.models[0]].metadata["split"][args.split])
    catalog = read_labelled_catalog(args.labels)
    rows = [(i, f, binary_label(label)) for i, f, label in zip(catalog.ids, catalog.files, catalog.labels)
            if i in wanted and binary_label(label)]
    truth = {i: label == "spiral" for i, _, label in rows}
    print(f"# robustness on gz1-sdss {args.split} split ({len(rows)} galaxies), {time.strftime('%Y-%m-%d')}, "
          f"{platform.machine()}, {os.cpu_count()} cores{', TTA on' if args.tta else ''}")
    header = " | ".join(f"{name} accuracy | {name} ROC AUC" for name in args.models)
    print(f"| re-framing | {header} |")
    print("|---|" + "---|" * (2 * len(args.models)))
    baseline = {}
    with tempfile.TemporaryDirectory() as scratch:
        for variant, transform in REFRAMINGS.items():
            if args.only and variant not in args.only and variant != "unchanged":
                continue
            rng = np.random.default_rng(0)
            folder = Path(scratch) / variant.replace(" ", "_").replace("%", "pc")
            folder.mkdir()
            inputs = []
            for row_id, file, _ in rows:
                image = Image.open(file).convert("RGB")
                if transform is None:
                    path = folder / f"{row_id}.jpeg"
                    image.save(path, quality=30)
                else:
                    path = folder / f"{row_id}.png"
                    transform(image, rng).save(path)
                inputs.append(CatalogRow(row_id, path))
            cells = []
            for name, loaded in models.items():
                results = [r for batch in predict(inputs, loaded, options=PredictOptions(tta=args.tta)) for r in batch]
                summary = binary_summary(np.array([r["p_spiral"] for r in results]), np.array([truth[r["id"]] for r in results]))
                baseline.setdefault(name, summary)
                drop = 100 * (summary["accuracy"] - baseline[name]["accuracy"])
                cells.append(f"{summary['accuracy']:.4f} ({drop:+.1f}) | {summary['roc_auc']:.4f}")
            print(f"| {variant} | {' | '.join(cells)} |", flush=True)
    print("Accuracy change against the unchanged split in points, in brackets.")


if __name__ == "__main__":
    main()
