"""Spiral-vs-elliptical figures of the bundled models on a split of gz1-sdss, side by side.

Usage: python benchmarks/accuracy.py [--split test] [--labels ../shared/data/gz1-sdss/labels.csv]
                                     [--models galaxynet seed] [--tta] [--backend auto|onnx|onnx-int8|torch]

The test split is the one saved in the bundled checkpoints (never used for training or selection);
run it once for the final figures and use --split val for anything that informs a choice.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from galaxymorph.evaluation import evaluate
from galaxymorph.prediction import BACKENDS, PredictOptions

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss" / "labels.csv"


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
    with tempfile.TemporaryDirectory() as scratch:
        for name, tta in [(name, tta) for name in args.models for tta in ([False, True] if args.tta else [False])]:
            metrics = evaluate(args.labels, Path(scratch) / f"{name}-{tta}", model=name, split=args.split,
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


if __name__ == "__main__":
    main()
