"""Spiral-vs-elliptical figures of the bundled models on a split of gz1-sdss, side by side.

Usage: python benchmarks/accuracy.py [--split test] [--labels ../shared/data/gz1-sdss/labels.csv]
                                     [--models galaxynet seed] [--tta] [--backend auto|onnx|onnx-int8|torch]

The test split is the one saved in the bundled checkpoints (never used for training or selection);
run it once for the final figures and use --split val for anything that informs a choice.
A second table compares each model with the first on the same galaxies: the accuracy's 95% interval,
the galaxies that only one of the two gets right with the exact McNemar p-value of that split, and
a paired bootstrap (`--bootstrap` resamples) of the log loss and ROC AUC differences and of how well
each model's p_spiral_std ranks its errors, with 95% intervals.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from galaxymorph.evaluation import evaluate
from galaxymorph.labels import binary_label
from galaxymorph.metrics import log_loss, mcnemar_p_value, roc_auc
from galaxymorph.prediction import BACKENDS, PredictOptions

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "labels.csv"


def scored_galaxies(evaluation: Path) -> dict[str, tuple[float, float, bool]]:
    """p_spiral, p_spiral_std and whether it is a spiral, for each spiral or elliptical galaxy of an evaluation."""
    with open(evaluation / "predictions.csv", newline="") as handle:
        return {row["id"]: (float(row["p_spiral"]), float(row["p_spiral_std"] or "nan"), binary_label(row["true_label"]) == "spiral")
                for row in csv.DictReader(handle) if not row["error"] and binary_label(row["true_label"])}


def paired_table(names: list[str], scored: list[dict[str, tuple[float, float, bool]]], intervals: list[tuple[float, float]],
                 resamples: int) -> None:
    """Each model against the first, on the galaxies both classified: McNemar's test of who is right,
    and a paired bootstrap (`resamples` draws of the galaxies) of the log loss and ROC AUC
    differences and of how well p_spiral_std ranks this model's errors (95% intervals)."""
    print(f"\n| model | accuracy 95% interval | right only for {names[0]} | right only for this model | McNemar p "
          f"| log loss difference (95%) | ROC AUC difference (95%) | p_spiral_std ranks errors (95%) |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, this, (low, high) in zip(names, scored, intervals):
        shared = sorted(scored[0].keys() & this.keys())
        first, second = (np.array([galaxies[i] for i in shared]) for galaxies in (scored[0], this))
        is_spiral = first[:, 2].astype(bool)
        right_first, right_this = (first[:, 0] >= 0.5) == is_spiral, (second[:, 0] >= 0.5) == is_spiral
        only_first, only_this = int(np.sum(right_first & ~right_this)), int(np.sum(right_this & ~right_first))

        def figures(rows: np.ndarray) -> tuple[float, float, float]:
            return (log_loss(second[rows, 0], is_spiral[rows]) - log_loss(first[rows, 0], is_spiral[rows]),
                    roc_auc(second[rows, 0], is_spiral[rows]) - roc_auc(first[rows, 0], is_spiral[rows]),
                    roc_auc(second[rows, 1], ~right_this[rows]))

        point = figures(np.arange(len(shared)))
        draws = np.array([figures(rng.integers(0, len(shared), len(shared))) for _ in range(resamples)])
        spans = [f"{value:+.4f} ({lo:+.4f} to {hi:+.4f})" for value, (lo, hi) in
                 zip(point[:2], np.nanpercentile(draws[:, :2], [2.5, 97.5], axis=0).T)]
        ranking = "-" if np.isnan(second[:, 1]).any() else \
            "{:.3f} ({:.3f}-{:.3f})".format(point[2], *np.nanpercentile(draws[:, 2], [2.5, 97.5]))
        print(f"| {name} | {low:.3f}-{high:.3f} | {only_first} | {only_this} | {mcnemar_p_value(only_first, only_this):.3f} "
              f"| {spans[0]} | {spans[1]} | {ranking} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--models", nargs="+", default=["galaxynet", "seed"])
    parser.add_argument("--tta", action="store_true", help="also evaluate with test-time augmentation")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples of the paired bootstrap against the first model")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="inference back-end (auto: the int8 graph on a CPU where a model has one)")
    args = parser.parse_args()
    print(f"# accuracy on gz1-sdss {args.split} split, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, back-end {args.backend}")
    print("| model | galaxies | accuracy | ROC AUC | ECE | log loss | elliptical P/R | spiral P/R | GZ1-class accuracy "
          "| confident share / accuracy | p_spiral_std ranks errors (AUC) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    names, scored, intervals = [], [], []
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
            scored.append(scored_galaxies(evaluation))
            intervals.append(binary["accuracy_95"])
    paired_table(names, scored, intervals, args.bootstrap)


if __name__ == "__main__":
    main()
