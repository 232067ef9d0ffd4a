"""The main job on embedded data: synthetic example galaxies -> morphology catalog -> contact sheet."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from galaxymorph.config import DEFAULT_MODEL
from galaxymorph.models import LoadedModel
from galaxymorph.outputs.plots import contact_sheet
from galaxymorph.prediction import ClassifySummary, PredictOptions, classify
from galaxymorph.sources.synthetic import write_examples


@dataclass(frozen=True)
class DemoResult:
    catalog: ClassifySummary
    contact_sheet: Path
    correct: int


def run_demo(output_dir: str | os.PathLike, *, count: int = 12, model: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
             options: PredictOptions = PredictOptions(workers=0), seed: int = 0) -> DemoResult:
    """Make `count` example galaxies, classify them and draw them with their probabilities."""
    output_dir = Path(output_dir)
    examples = write_examples(output_dir / "images", count, seed=seed)
    summary = classify([path for path, _ in examples], output_dir / "morphology.csv", model=model, options=options)
    import pyarrow.csv

    rows = pyarrow.csv.read_csv(summary.output).to_pylist()
    captions = [f"{row['label']} p_spiral={row['p_spiral']:.2f}\n(made as {kind})" for row, (_, kind) in zip(rows, examples)]
    images = [np.asarray(Image.open(path)) for path, _ in examples]
    sheet = contact_sheet(images, captions, output_dir / "contact_sheet.png")
    correct = sum(row["label"] == kind for row, (_, kind) in zip(rows, examples))
    return DemoResult(summary, sheet, correct)
