"""Evaluate a model on a labelled catalog: metrics as JSON, ROC, reliability and confusion as PNG."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galaxymorph.catalog import CatalogRow, read_labelled_catalog
from galaxymorph.config import DEFAULT_MODEL
from galaxymorph.labels import BINARY_CLASSES, binary_label, has_spiral_semantics
from galaxymorph.metrics import (
    binary_summary,
    calibration_bins,
    confusion_matrix,
    per_class_precision_recall,
    roc_auc,
    roc_curve,
    wilson_interval,
)
from galaxymorph.models import LoadedModel, load_model
from galaxymorph.outputs import plots
from galaxymorph.prediction import PredictOptions, predict
from galaxymorph.training.data import rows_of_split

SPLITS = ("test", "val", "train", "all")


def evaluate(labels: str | os.PathLike, output_dir: str | os.PathLike, *,
             model: str | os.PathLike | LoadedModel = DEFAULT_MODEL, split: str = "test",
             options: PredictOptions = PredictOptions()) -> dict:
    """Classify the rows of `split` (from the model's saved split) and write metrics and figures.

    Returns the metrics; `output_dir` receives metrics.json, predictions.csv and confusion.png, and
    for models that tell spirals from ellipticals roc.png and reliability.png.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    loaded = load_model(model)
    loaded.require_trained_head()
    catalog = read_labelled_catalog(labels)
    catalog = catalog.subset(rows_of_split(catalog.ids, loaded, split, labels))
    truth = dict(zip(catalog.ids, catalog.labels))
    rows = [row for batch in predict([CatalogRow(i, f) for i, f in zip(catalog.ids, catalog.files)], loaded,
                                     options=options) for row in batch]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    from galaxymorph.outputs import CatalogWriter
    from galaxymorph.outputs.metadata import provenance

    with CatalogWriter(output_dir / "predictions.csv", provenance=provenance(loaded, tta=options.tta)) as writer:
        writer.write([dict(row, true_label=truth[row["id"]]) for row in rows])

    metrics = {
        "model": loaded.name, "data": str(labels), "split": split,
        "rows": len(rows), "unreadable": sum(1 for row in rows if row["error"]),
    }
    if has_spiral_semantics(loaded.classes):
        scored = [row for row in rows if not row["error"] and binary_label(truth[row["id"]])]
        p_spiral = np.array([row["p_spiral"] for row in scored])
        is_spiral = np.array([binary_label(truth[row["id"]]) == "spiral" for row in scored])
        classes = list(BINARY_CLASSES)
        evaluation = spiral_evaluation(p_spiral, is_spiral)
        matrix = evaluation.matrix
        for stem, figure in evaluation.figures(loaded.name).items():
            plots.save_png(figure, output_dir / f"{stem}.png")
        metrics["spiral_vs_elliptical"] = {
            **evaluation.summary,
            "accuracy_95": wilson_interval(int(np.sum((p_spiral >= 0.5) == is_spiral)), len(is_spiral)),
            "per_class": per_class_precision_recall(matrix, classes),
            "confusion_matrix": matrix.tolist(),
            **uncertainty_summary(p_spiral, is_spiral, np.array([row["p_spiral_std"] for row in scored]),
                                  np.array([row["confident"] for row in scored], dtype=bool)),
        }
    if loaded.classes != BINARY_CLASSES:
        fine = [row for row in rows if not row["error"] and truth[row["id"]] in loaded.classes]
        classes = list(loaded.classes)
        true_index = [classes.index(truth[row["id"]]) for row in fine]
        predicted_index = [classes.index(row["class"]) for row in fine]
        matrix = confusion_matrix(true_index, predicted_index, len(classes))
        metrics["classes"] = {
            "accuracy": float(np.mean(np.array(true_index) == np.array(predicted_index))) if fine else float("nan"),
            "per_class": per_class_precision_recall(matrix, classes),
            "confusion_matrix": matrix.tolist(),
            "labels": classes,
        }
    plots.save_png(plots.confusion_figure(matrix, classes), output_dir / "confusion.png")
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


@dataclass(frozen=True)
class SpiralEvaluation:
    """Spiral vs elliptical against the truth: the summary (accuracy, ROC AUC, ECE...), the confusion
    matrix at p_spiral = 0.5, the ROC curve and the reliability bins."""

    summary: dict[str, float]
    matrix: np.ndarray
    roc: tuple[np.ndarray, np.ndarray]
    reliability: tuple[np.ndarray, np.ndarray, np.ndarray]

    def figures(self, model_name: str) -> dict[str, object]:
        """The ROC curve and the reliability diagram as matplotlib figures, by file stem."""
        return {"roc": plots.roc_figure({model_name: (*self.roc, self.summary["roc_auc"])}),
                "reliability": plots.reliability_figure(*self.reliability, self.summary["ece"])}


def spiral_evaluation(p_spiral: np.ndarray, is_spiral: np.ndarray) -> SpiralEvaluation:
    """Score p_spiral against the truth (`SpiralEvaluation`)."""
    return SpiralEvaluation(binary_summary(p_spiral, is_spiral),
                            confusion_matrix(is_spiral.astype(int), (p_spiral >= 0.5).astype(int), 2),
                            roc_curve(p_spiral, is_spiral), calibration_bins(p_spiral, is_spiral))


def uncertainty_summary(p_spiral: np.ndarray, is_spiral: np.ndarray, spread: np.ndarray, confident: np.ndarray) -> dict:
    """How honest the uncertainty columns are: the share of galaxies flagged `confident` and their
    accuracy, and, where p_spiral_std was measured, how well it ranks the errors (ROC AUC of
    p_spiral_std as a detector of wrong labels; 0.5 = no better than chance)."""
    wrong = (p_spiral >= 0.5) != is_spiral
    summary = {"confident_share": float(confident.mean()) if len(confident) else float("nan"),
               "confident_accuracy": float(1 - wrong[confident].mean()) if confident.any() else float("nan")}
    if len(spread) and not np.isnan(spread).any():
        summary["std_error_auc"] = roc_auc(spread, wrong)
    return summary
