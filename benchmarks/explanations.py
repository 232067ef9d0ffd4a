"""Sanity checks of the explanations on gz1-sdss: do the maps look at the galaxy, and do they
depend on what the model learnt?

Usage: python benchmarks/explanations.py [--split test] [--model galaxynet] [--method gradcam]

For every galaxy of the split: the model input, its explanation map for the predicted class, and
the central galaxy's segmentation in that input (the framing step's `central_segment`). Reported:
the share of the map's total that falls inside the segmentation (goal >= 0.6 for the default
model with Grad-CAM), the share of the image the segmentation covers (what a map spread evenly
would score), where the map's total lies by distance from the centre (8 px rings) beside how much
of each ring the segmentation fills, the share inside by predicted class, and the Spearman rank correlation between the maps of the trained model and of the
same architecture with re-initialised weights (goal < 0.5; Adebayo et al. 2018's randomisation test).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from galaxymorph.catalog import read_labelled_catalog
from galaxymorph.explain import METHODS, attributions, rank_correlation, share_inside
from galaxymorph.labels import binary_label
from galaxymorph.models import LoadedModel, build_model, load_model
from galaxymorph.preprocess.framing import central_segment
from galaxymorph.preprocess.parallel import decode_in_batches

RING_WIDTH = 8
DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "labels.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--model", default="galaxynet")
    parser.add_argument("--method", default="gradcam", choices=METHODS)
    args = parser.parse_args()

    loaded = load_model(args.model)
    wanted = set(loaded.metadata["split"][args.split])
    catalog = read_labelled_catalog(args.labels)
    files = [f for i, f, label in zip(catalog.ids, catalog.files, catalog.labels) if i in wanted and binary_label(label)]
    torch.manual_seed(0)
    random_model = build_model(loaded.metadata)
    randomised = LoadedModel("re-initialised", random_model.eval(), loaded.preprocessing, loaded.metadata)
    started = time.perf_counter()
    shares, areas, correlations, unsegmented, empty = [], [], [], 0, 0
    shares_by_class: dict[str, list[float]] = {}
    size = loaded.preprocessing.image_size
    distance = np.hypot(*(np.indices((size, size)) - (size - 1) / 2))
    rings = [(distance >= inner) & (distance < inner + RING_WIDTH) for inner in range(0, size // 2 + RING_WIDTH, RING_WIDTH)]
    map_in_rings, segment_in_rings = np.zeros(len(rings)), np.zeros(len(rings))
    for batch in decode_in_batches(files, loaded.preprocessing, file_of=Path, batch_size=64, workers=os.cpu_count() or 1):
        images = batch.images
        maps, targets = attributions(loaded, images, args.method)
        random_maps, _ = attributions(randomised, images, args.method, targets)
        for image, trained_map, random_map, target in zip(images, maps, random_maps, targets):
            segment = central_segment(image.mean(axis=0))
            if segment is None:
                unsegmented += 1
                continue
            empty += not trained_map.any()
            shares.append(share_inside(trained_map, segment))
            shares_by_class.setdefault(loaded.classes[int(target)], []).append(shares[-1])
            areas.append(segment.mean())
            map_in_rings += [share_inside(trained_map, ring) for ring in rings]
            segment_in_rings += [segment[ring].mean() for ring in rings]
            correlations.append(rank_correlation(trained_map, random_map))
    seconds = time.perf_counter() - started
    print(f"# explanations on gz1-sdss {args.split} split, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores; model {args.model}, method {args.method}")
    print(f"galaxies {len(files)}, with a central segmentation {len(shares)}, without {unsegmented}")
    print(f"share of the map inside the galaxy: mean {np.mean(shares):.3f}, median {np.median(shares):.3f} "
          f"(goal >= 0.6); the segmentation covers {np.mean(areas):.3f} of the image on average; "
          f"{empty} maps hold no positive evidence (they count 0 inside)")
    print(f"share of the map in {RING_WIDTH} px rings from the centre: "
          f"{', '.join(f'{v:.2f}' for v in map_in_rings / len(shares))}; "
          f"share of each ring inside the segmentation: {', '.join(f'{v:.2f}' for v in segment_in_rings / len(shares))}")
    print("share inside by predicted class: " + ", ".join(
        f"{name} {np.mean(values):.3f} ({len(values)})" for name, values in sorted(shares_by_class.items())))
    print(f"rank correlation with a re-initialised model: mean {np.mean(correlations):.3f}, "
          f"median {np.median(correlations):.3f} (goal < 0.5)")
    print(f"{len(files) / seconds:.1f} galaxies/s for both maps")


if __name__ == "__main__":
    main()
