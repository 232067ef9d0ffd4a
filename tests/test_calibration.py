import json
import shutil

import numpy as np
import pytest

from galaxymorph.catalog import read_labelled_catalog
from galaxymorph.labels import BINARY_CLASSES, binary_label
from galaxymorph.models import load_model
from galaxymorph.prediction import Classifier
from galaxymorph.training.calibration import calibrate, fit_temperature, temper
from galaxymorph.training.data import rows_of_split


def test_temper_matches_dividing_the_logits():
    logits = np.array([[2.0, -1.0, 0.5]])
    probabilities = np.exp(logits) / np.exp(logits).sum()
    expected = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum()
    np.testing.assert_allclose(temper(probabilities, 2.5), expected)


@pytest.mark.parametrize("true_temperature", [0.5, 3.0])
def test_fit_temperature_recovers_an_overconfident_model(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, 20_000)
    is_spiral = rng.uniform(size=logits.size) < 1 / (1 + np.exp(-logits))
    reported = 1 / (1 + np.exp(-logits * true_temperature))  # logits scaled by T: T times too sure (or unsure)
    probabilities = np.stack([1 - reported, reported], axis=1)
    assert fit_temperature(probabilities, is_spiral, BINARY_CLASSES) == pytest.approx(true_temperature, rel=0.05)


def test_calibrate_stores_the_temperature_that_prediction_uses(trained_checkpoint, synthetic_catalog, tmp_path):
    for suffix in (".pt", ".json"):
        shutil.copy(trained_checkpoint.with_suffix(suffix), tmp_path / f"model{suffix}")
    result = calibrate(tmp_path / "model.pt", synthetic_catalog, split="val")
    assert result["galaxies"] == 36 and result["nll_after"] <= result["nll_before"] + 1e-9
    stored = json.loads((tmp_path / "model.json").read_text())["calibration"]
    assert stored["temperature"] == pytest.approx(result["temperature"])
    validation = read_labelled_catalog(synthetic_catalog)
    validation = validation.subset(rows_of_split(validation.ids, load_model(tmp_path / "model.pt"), "val", synthetic_catalog))
    spirals = [binary_label(label) == "spiral" for label in validation.labels]
    assert stored["spiral_share"] == pytest.approx(np.mean(spirals))  # the class mix p_spiral is calibrated to, for `confident`
    assert Classifier(load_model(tmp_path / "model.pt")).temperature == pytest.approx(result["temperature"])


def test_calibrate_fits_the_feature_density_behind_ood_score(trained_checkpoint, synthetic_catalog, tmp_path):
    for suffix in (".pt", ".json"):
        shutil.copy(trained_checkpoint.with_suffix(suffix), tmp_path / f"model{suffix}")
    typicality = calibrate(tmp_path / "model.pt", synthetic_catalog, split="val")["typicality"]
    assert typicality["typical_share"] == 0.95 and typicality["members"] == 1
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.metadata["typicality"]["limit"] == pytest.approx(typicality["limit"])
    images = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)  # noise, nothing like a galaxy
    assert (Classifier(loaded, backend="torch").scores(images).ood > typicality["limit"]).all()


def test_symmetry_views_cover_rotations_and_mirrors():
    from galaxymorph.preprocess.augment import symmetry_views

    image = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    views = symmetry_views(image).reshape(8, 2, 3, 4, 4)
    rotated = np.rot90(image, 1, axes=(2, 3))
    rotated_views = symmetry_views(np.ascontiguousarray(rotated)).reshape(8, 2, 3, 4, 4)
    assert sorted(v.tobytes() for v in views[:, 0]) == sorted(v.tobytes() for v in rotated_views[:, 0])
    np.testing.assert_array_equal(views[4], image[..., ::-1])
