"""Honest answers on cutouts framed and rendered unlike gz1-sdss: one table per model.

Usage: python benchmarks/other_framings.py [--split test|val] [--models galaxynet_ensemble seed]
                                           [--backend auto] [--save-rows FOLDER]

--split test (once per released model): the gz1-sdss test split; its ellipticals as they are and
re-rendered zoomed (the guard against "zoomed means spiral"); all of zoomed-spirals (one class:
recall); gz2-sdss's 210 clean ellipticals. --split val (for every choice): the gz1-sdss validation
split as it is and in each rendering of `renderings.py`, all galaxies. Accuracy and recall count
p_spiral >= 0.5 as spiral over all rows, `uncertain` ones included; `confident` is the share of
rows so marked and how many of those are right.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from renderings import RENDERINGS, render

from galaxymorph.catalog import CatalogRow, iter_catalog_rows, read_labelled_catalog
from galaxymorph.training.data import rows_of_split
from galaxymorph.labels import binary_label
from galaxymorph.metrics import binary_summary
from galaxymorph.models import load_model
from galaxymorph.outputs.catalog_writer import CatalogWriter
from galaxymorph.prediction import BACKENDS, PredictOptions, predict

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ZOOMED = "zoomed like zoomed-spirals (central 40%, 120 px)"


def gz1_split(loaded, split: str) -> tuple[list[CatalogRow], list[bool]]:
    """The spiral and elliptical galaxies of the model's saved split of gz1-sdss, and which are spirals."""
    labels = DATA / "gz1-sdss" / "labels.csv"
    catalog = read_labelled_catalog(labels)
    chosen = [i for i in rows_of_split(catalog.ids, loaded, split, labels) if binary_label(catalog.labels[i])]
    return ([CatalogRow(catalog.ids[i], catalog.files[i]) for i in chosen],
            [binary_label(catalog.labels[i]) == "spiral" for i in chosen])


def zoomed_spirals() -> tuple[list[CatalogRow], list[bool]]:
    rows = list(iter_catalog_rows(DATA / "zoomed-spirals" / "labels.csv"))
    return rows, [True] * len(rows)


def gz2_ellipticals() -> tuple[list[CatalogRow], list[bool]]:
    rows = [row for row in iter_catalog_rows(DATA / "gz2-sdss" / "catalog.csv") if row.columns["rule_label"] == "elliptical"]
    return rows, [False] * len(rows)


def rendered(rows: list[CatalogRow], rendering: str, scratch: Path) -> list[CatalogRow]:
    paths = render([row.file for row in rows], RENDERINGS[rendering], scratch / f"r{list(RENDERINGS).index(rendering)}")
    return [CatalogRow(row.id, path) for row, path in zip(rows, paths)]


def figures(results: list[dict], truth: list[bool]) -> dict:
    """Accuracy (recall for one class), ROC AUC and ECE where both classes are present, and the
    shares of uncertain, confident and truncated rows, how many confident true spirals are right
    (what a sample of spirals only sees), over rows that could be read."""
    truth = np.array([t for t, row in zip(truth, results) if not row["error"]])
    results = [row for row in results if not row["error"]]
    p_spiral = np.array([row["p_spiral"] for row in results])
    confident = np.array([row["confident"] for row in results])
    right = (p_spiral >= 0.5) == truth
    both = 0 < truth.sum() < len(truth)
    summary = binary_summary(p_spiral, truth) if both else {}
    return {"n": len(results), "accuracy": right.mean(), "roc_auc": summary.get("roc_auc"), "ece": summary.get("ece"),
            "uncertain": np.mean([row["label"] == "uncertain" for row in results]),
            "confident": confident.mean(), "confident_accuracy": right[confident].mean() if confident.any() else float("nan"),
            "confident_spirals": right[confident & truth].mean() if (confident & truth).any() else float("nan"),
            "truncated": np.mean([row["galaxy_truncated"] for row in results]) if "galaxy_truncated" in results[0] else None,
            "ood_median": float(np.median(ood)) if len(ood := [row["ood_score"] for row in results if row["ood_score"] == row["ood_score"]]) else None}


def cell(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--models", nargs="+", default=["galaxynet_ensemble", "seed"])
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--save-rows", type=Path, help="write each set's output rows here as CSV")
    args = parser.parse_args()
    options = PredictOptions(workers=os.cpu_count() or 1, backend=args.backend)
    print(f"# other framings, {args.split}, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, back-end {args.backend}")
    for name in args.models:
        loaded = load_model(name)
        split_rows, split_truth = gz1_split(loaded, args.split)
        ellipticals = [row for row, spiral in zip(split_rows, split_truth) if not spiral]
        with tempfile.TemporaryDirectory() as folder:
            scratch = Path(folder)
            if args.split == "val":
                sets = {"gz1-sdss val": (split_rows, split_truth)}
                sets.update({f"gz1-sdss val, {rendering}": (rendered(split_rows, rendering, scratch), split_truth)
                             for rendering in RENDERINGS})
            else:
                sets = {"gz1-sdss test": (split_rows, split_truth),
                        "gz1-sdss test ellipticals": (ellipticals, [False] * len(ellipticals))}
                sets.update({f"gz1-sdss test ellipticals, {rendering}": (rendered(ellipticals, rendering, scratch),
                                                                         [False] * len(ellipticals))
                             for rendering in RENDERINGS if rendering != "re-stretched"})
                sets.update({"zoomed-spirals (recall)": zoomed_spirals(), "gz2-sdss clean ellipticals": gz2_ellipticals()})
            print(f"\n## {name}\n| set | galaxies | accuracy | ROC AUC | ECE | uncertain | confident share | "
                  "confident accuracy | confident true spirals right | galaxy_truncated | median ood_score |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for title, (rows, truth) in sets.items():
                results = [row for batch in predict(rows, loaded, options=options) for row in batch]
                if args.save_rows:
                    save(results, args.save_rows / f"{loaded.name}-{title.replace(' ', '_').replace('/', '')}.csv")
                got = figures(results, truth)
                print(f"| {title} | {got['n']} | {cell(got['accuracy'])} | {cell(got['roc_auc'])} | {cell(got['ece'])} "
                      f"| {cell(got['uncertain'], 3)} | {cell(got['confident'], 3)} | {cell(got['confident_accuracy'])} "
                      f"| {cell(got['confident_spirals'], 3)} "
                      f"| {cell(got['truncated'], 3)} | {cell(got['ood_median'], 2)} |", flush=True)


def save(results: list[dict], path: Path) -> None:
    with CatalogWriter(path) as writer:
        writer.write(results)


if __name__ == "__main__":
    main()
