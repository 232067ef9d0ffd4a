"""Fine-tuning from the pretrained model against training from scratch, on 200 labelled images.

Usage: python benchmarks/finetune.py [--train-images 200] [--seeds 0 1 2]

The new question is edge-on versus face-on disk. Its 200 training images come from the validation
split of the bundled model (images it never trained on), and both models are judged on the disks
of its test split. Both runs use the same catalog, epochs, learning rate and augmentation; the
fine-tuned one starts from the bundled weights with a new output layer, trains that layer alone
for the first epochs, then also the last two feature blocks.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from galaxymorph.catalog import CatalogRow, read_labelled_catalog
from galaxymorph.config import DEFAULT_MODEL
from galaxymorph.metrics import binary_summary
from galaxymorph.models import load_model
from galaxymorph.prediction import PredictOptions, predict
from galaxymorph.training import TrainConfig, train

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "labels.csv"
TASK = {"edge_on_disk": "edge_on", "spiral_clockwise": "face_on", "spiral_anticlockwise": "face_on"}


def task_rows(catalog, ids: set[str]) -> list[tuple[str, Path, str]]:
    return [(i, f, TASK[label]) for i, f, label in zip(catalog.ids, catalog.files, catalog.labels)
            if i in ids and label in TASK]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--train-images", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    pretrained = load_model(DEFAULT_MODEL)
    catalog = read_labelled_catalog(args.labels)
    pool = task_rows(catalog, set(pretrained.metadata["split"]["val"]))
    held_out = task_rows(catalog, set(pretrained.metadata["split"]["test"]))
    print(f"# fine-tuning vs scratch: edge-on vs face-on disk, {args.train_images} training images, "
          f"{len(held_out)} held-out disks; {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores")
    print("| seed | start | held-out accuracy | held-out ROC AUC | training s |")
    print("|---|---|---|---|---|")
    results = {"fine-tuned": [], "scratch": []}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            chosen = np.random.default_rng(seed).choice(len(pool), args.train_images, replace=False)
            labels = Path(scratch) / f"task-{seed}.csv"
            labels.write_text("id,file,label\n" + "".join(f"{pool[i][0]},{pool[i][1]},{pool[i][2]}\n" for i in chosen))
            for start in results:
                fine = start == "fine-tuned"
                started = time.perf_counter()
                weights = train(TrainConfig(
                    labels=labels, output=Path(scratch) / f"{start}-{seed}.pt", classes="labels",
                    architecture=pretrained.metadata["architecture"], epochs=args.epochs, batch_size=64,
                    learning_rate=1e-3, seed=seed, split_fractions=(0.85, 0.15, 0.0),
                    init_from=DEFAULT_MODEL if fine else None, freeze_epochs=10 if fine else 0,
                    unfrozen_blocks=2 if fine else None, preprocessing=pretrained.preprocessing,
                    workers=os.cpu_count() or 1, progress=False, use_cache=False))
                seconds = time.perf_counter() - started
                rows = [r for batch in predict([CatalogRow(i, f) for i, f, _ in held_out], weights,
                                               options=PredictOptions()) for r in batch]
                summary = binary_summary(np.array([r["p_edge_on"] for r in rows]),
                                         np.array([label == "edge_on" for _, _, label in held_out]))
                results[start].append(summary)
                print(f"| {seed} | {start} | {summary['accuracy']:.4f} | {summary['roc_auc']:.4f} | {seconds:.0f} |", flush=True)
    for start, summaries in results.items():
        print(f"| mean | {start} | {np.mean([s['accuracy'] for s in summaries]):.4f} | "
              f"{np.mean([s['roc_auc'] for s in summaries]):.4f} | |")


if __name__ == "__main__":
    main()
