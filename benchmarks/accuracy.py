"""Spiral-vs-elliptical figures of the bundled models on a split of gz1-sdss, side by side.

Usage: python benchmarks/accuracy.py [--split test] [--labels ../shared/data/gz1-sdss/labels.csv]
                                     [--models galaxynet seed] [--tta] [--backend auto|onnx|onnx-int8|torch]

The test split is the one saved in the bundled checkpoints (never used for training or selection);
run it once for the final figures and use --split val for anything that informs a choice.
A second table compares each model with the first on the same galaxies: the accuracy's 95% interval
and the galaxies that only one of the two gets right, with the exact McNemar p-value of that split.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

from galaxymorph.evaluation import evaluate
from galaxymorph.labels import binary_label
from galaxymorph.metrics import mcnemar_p_value
from galaxymorph.prediction import BACKENDS, PredictOptions

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "labels.csv"


def right_by_galaxy(evaluation: Path) -> dict[str, bool]:
    """Whether p_spiral picks the right side, for each spiral or elliptical galaxy of an evaluation."""
    with open(evaluation / "predictions.csv", newline="") as handle:
        return {row["id"]: (float(row["p_spiral"]) >= 0.5) == (binary_label(row["true_label"]) == "spiral")
                for row in csv.DictReader(handle) if not row["error"] and binary_label(row["true_label"])}


def paired_table(names: list[str], rights: list[dict[str, bool]], intervals: list[tuple[float, float]]) -> None:
    """Each model against the first, on the galaxies both classified."""
    print(f"\n| model | accuracy 95% interval | right only for {names[0]} | right only for this model | McNemar p |")
    print("|---|---|---|---|---|")
    for name, right, (low, high) in zip(names, rights, intervals):
        shared = rights[0].keys() & right.keys()
        only_first = sum(rights[0][i] and not right[i] for i in shared)
        only_this = sum(right[i] and not rights[0][i] for i in shared)
        print(f"| {name} | {low:.3f}-{high:.3f} | {only_first} | {only_this} | {mcnemar_p_value(only_first, only_this):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--models", nargs="+", default=["galaxynet", "seed"])
    parser.add_argument("--tta", action="store_true", help="also evaluate with test-time augmentation")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="inference back-end (auto: the int8 graph on a CPU where a model has one)")
    args = parser.parse_args()
    print(f"# accuracy on gz1-sdss {args.split} split, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, back-end {args.backend}")
    print("| model | galaxies | accuracy | ROC AUC | ECE | log loss | elliptical P/R | spiral P/R | GZ1-class accuracy "
          "| confident share / accuracy | p_spiral_std ranks errors (AUC) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    names, rights, intervals = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, tta) in enumerate((name, tta) for name in args.models for tta in ([False, True] if args.tta else [False])):
            evaluation = Path(scratch) / str(index)
            metrics = evaluate(args.labels, evaluation, model=name, split=args.split,
                               options=PredictOptions(workers=os.cpu_count() or 1, tta=tta, backend=args.backend))
            binary = metrics["spiral_vs_elliptical"]
            per_class = binary["per_class"]
            fine = metrics.get("classes", {}).get("accuracy")
            ranking = f"{binary['std_error_auc']:.3f}" if "std_error_auc" in binary else "-"
            print(f"| {name}{' + TTA' if tta else ''} | {binary['n']} | {binary['accuracy']:.4f} | {binary['roc_auc']:.4f} "
                  f"| {binary['ece']:.4f} | {binary['log_loss']:.4f} "
                  f"| {per_class['elliptical']['precision']:.3f}/{per_class['elliptical']['recall']:.3f} "
                  f"| {per_class['spiral']['precision']:.3f}/{per_class['spiral']['recall']:.3f} "
                  f"| {'-' if fine is None else f'{fine:.4f}'} "
                  f"| {binary['confident_share']:.3f} / {binary['confident_accuracy']:.4f} "
                  f"| {ranking} |")
            names.append(f"{name}{' + TTA' if tta else ''}")
            rights.append(right_by_galaxy(evaluation))
            intervals.append(binary["accuracy_95"])
    paired_table(names, rights, intervals)


if __name__ == "__main__":
    main()
