"""End to end on the real SDSS cutouts (skipped when ../shared/data/gz1-sdss is absent).

These use the validation split: the test split is reserved for the figures in MODEL_CARD.md.
"""

import pytest

from galaxymorph.evaluation import evaluate
from galaxymorph.models import load_model
from galaxymorph.prediction import PredictOptions

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def validation_metrics(gz1_sdss, tmp_path_factory):
    labels = gz1_sdss / "labels.csv"
    return {name: evaluate(labels, tmp_path_factory.mktemp(name), model=name, split="val",
                           options=PredictOptions(workers=2))
            for name in ("galaxynet", "seed")}


def test_bundled_model_reproduces_its_recorded_validation_figures(validation_metrics):
    recorded = load_model("galaxynet").metadata["metrics"]["validation"]
    measured = validation_metrics["galaxynet"]["spiral_vs_elliptical"]
    assert measured["n"] == recorded["spiral_n"]
    # The training loop resamples its cached 96 px view; classify decodes the files directly.
    assert measured["roc_auc"] == pytest.approx(recorded["spiral_roc_auc"], abs=0.01)
    assert measured["accuracy"] == pytest.approx(recorded["spiral_accuracy"], abs=0.02)


def test_default_model_beats_the_seed(validation_metrics):
    default = validation_metrics["galaxynet"]["spiral_vs_elliptical"]
    seed = validation_metrics["seed"]["spiral_vs_elliptical"]
    assert default["roc_auc"] > seed["roc_auc"] + 0.02
    assert default["accuracy"] > seed["accuracy"]


def test_fine_classes_are_evaluated(validation_metrics):
    fine = validation_metrics["galaxynet"]["classes"]
    assert fine["labels"][0] == "elliptical" and len(fine["confusion_matrix"]) == 6
    assert fine["accuracy"] > 0.6
