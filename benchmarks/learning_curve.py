"""Learning curve: validation figures of models trained on shares of one training split.

Usage: python benchmarks/learning_curve.py [--labels ../shared/data/gz1-sdss/labels.csv] MODEL...

Each MODEL (checkpoint or bundled name; an ensemble counts as its members) was trained with
`galaxymorph train ... --train-share S` on the same split. Its metadata holds the validation figures
that `train` measured on its best epoch (float32, centre view, before any temperature), so every
model is measured alike and no image is classified again. The last lines fit each figure against
log2 of the training galaxies, over all models and over the last doubling (the largest training
sets and those at least half as large): what one more doubling of the labels is worth.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from galaxymorph.catalog import read_labelled_catalog
from galaxymorph.models import load_model
from galaxymorph.training.data import choose_classes

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "labels.csv"
FIGURES = ("spiral_accuracy", "spiral_roc_auc", "spiral_log_loss")


def trained_members(name: str, labels: Path) -> list[dict]:
    """Training galaxies, best epoch and validation figures of a model, or of each ensemble member."""
    metadata = load_model(name).metadata
    trainings = metadata["training"].get("members", [metadata["training"]])
    results = metadata["metrics"].get("members", [metadata["metrics"]])
    members = []
    for index, (training, result) in enumerate(zip(trainings, results)):
        rows = training.get("train_rows") or training_galaxies(metadata["split"]["train"], training.get("class_scheme", training.get("classes")), labels)
        label = name if len(trainings) == 1 else f"{name} member {index + 1}"
        members.append({"model": label, "share": training.get("train_share", 1.0), "rows": rows,
                        "epochs": training["epochs"], "best_epoch": result["best_epoch"],
                        **{figure: result["validation"][figure] for figure in FIGURES}})
    return members


def training_galaxies(train_ids: list[str], class_scheme: str, labels: Path) -> int:
    """Galaxies of a saved training split that a class scheme trains on (models from before train_rows)."""
    catalog = read_labelled_catalog(labels)
    _, targets = choose_classes(catalog.labels, class_scheme)
    in_split = set(train_ids)
    return sum(target is not None and row_id in in_split for row_id, target in zip(catalog.ids, targets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    members = [member for name in args.models for member in trained_members(name, args.labels)]
    print(f"# learning curve on the validation split, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
          f"{os.cpu_count()} cores")
    print("| model | share | training galaxies | best epoch / epochs | accuracy | ROC AUC | log loss |")
    print("|---|---|---|---|---|---|---|")
    for m in members:
        print(f"| {m['model']} | {m['share']:g} | {m['rows']} | {m['best_epoch']} / {m['epochs']} | "
              f"{m['spiral_accuracy']:.4f} | {m['spiral_roc_auc']:.4f} | {m['spiral_log_loss']:.4f} |")
    by_rows = defaultdict(list)
    for m in members:
        by_rows[m["rows"]].append(m)
    print("\n| training galaxies | models | mean accuracy (range) | mean ROC AUC (range) | mean log loss (range) |")
    print("|---|---|---|---|---|")
    for rows in sorted(by_rows):
        group = by_rows[rows]
        cells = []
        for figure in FIGURES:
            values = [m[figure] for m in group]
            cells.append(f"{np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})")
        print(f"| {rows} | {len(group)} | " + " | ".join(cells) + " |")
    largest = max(by_rows)
    for label, fitted in (("all models", members), ("the last doubling", [m for m in members if m["rows"] >= largest / 2])):
        if len({m["rows"] for m in fitted}) < 2:
            continue
        doublings = np.log2([m["rows"] for m in fitted])
        for figure in FIGURES:
            slope, intercept = np.polyfit(doublings, [m[figure] for m in fitted], 1)
            print(f"{figure}, fit over {label}: {slope:+.4f} per doubling of the training galaxies "
                  f"(fit at {largest}: {slope * np.log2(largest) + intercept:.4f})")


if __name__ == "__main__":
    main()
