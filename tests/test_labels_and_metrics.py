import numpy as np
import pytest
from hypothesis import given, strategies as st

from galaxymorph.labels import (BINARY_CLASSES, GZ1_CLASSES, binary_label, has_spiral_semantics, spiral_probability,
                               with_even_classes)
from galaxymorph.metrics import (
    binary_summary,
    confusion_matrix,
    expected_calibration_error,
    mcnemar_p_value,
    per_class_precision_recall,
    roc_auc,
    wilson_interval,
)


def test_binary_labels_follow_the_seed_semantics():
    assert binary_label("edge_on_disk") == "spiral" and binary_label("spiral_clockwise") == "spiral"
    assert binary_label("elliptical") == "elliptical"
    assert binary_label("merger") is None and binary_label("dont_know") is None


def test_spiral_probability_from_fine_classes_is_conditional_on_disk_or_elliptical():
    probabilities = np.array([[0.2, 0.1, 0.1, 0.2, 0.3, 0.1]])
    assert spiral_probability(probabilities, GZ1_CLASSES)[0] == pytest.approx(0.4 / 0.6)
    assert spiral_probability(np.array([[0.3, 0.7]]), BINARY_CLASSES)[0] == pytest.approx(0.7)
    neither = np.array([[0.0, 0.0, 0.0, 0.0, 0.6, 0.4], [np.nan] * 6])  # all merger / don't know; unclassified
    assert spiral_probability(neither, GZ1_CLASSES)[0] == 0.5 and np.isnan(spiral_probability(neither, GZ1_CLASSES)[1])
    assert not has_spiral_semantics(("ring", "no_ring"))


def test_roc_auc_known_values():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


@given(st.lists(st.floats(0, 1), min_size=2, max_size=50), st.randoms())
def test_roc_auc_matches_pairwise_ranking(scores, random):
    scores = np.array(scores)
    positives = np.array([random.random() < 0.5 for _ in scores])
    if positives.all() or not positives.any():
        return
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in scores[positives] for n in scores[~positives]]
    assert roc_auc(scores, positives) == pytest.approx(np.mean(pairs))


def test_expected_calibration_error():
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(size=200_000)
    calibrated = rng.uniform(size=probabilities.size) < probabilities
    assert expected_calibration_error(probabilities, calibrated) < 0.01
    assert expected_calibration_error(np.full(1000, 0.9), np.zeros(1000, bool)) == pytest.approx(0.9)


def test_confusion_and_precision_recall():
    matrix = confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2)
    assert matrix.tolist() == [[1, 1], [1, 2]]
    report = per_class_precision_recall(matrix, ["elliptical", "spiral"])
    assert report["spiral"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "support": 3}
    summary = binary_summary(np.array([0.1, 0.9, 0.6, 0.4]), np.array([0, 1, 0, 1]))
    assert summary["accuracy"] == 0.5 and summary["n"] == 4
    assert summary["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.9, 0.4, 0.4])))


def test_accuracy_comes_with_its_interval_and_paired_comparisons_with_a_significance():
    low, high = wilson_interval(50, 100)
    assert (low, high) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    low, high = wilson_interval(766, 828)  # the interval is not symmetric near 1
    assert low < 766 / 828 < high and (high - 766 / 828) < (766 / 828 - low)
    assert mcnemar_p_value(0, 6) == pytest.approx(2 / 64) == mcnemar_p_value(6, 0)
    assert mcnemar_p_value(4, 4) == 1.0 and mcnemar_p_value(0, 0) == 1.0
    assert mcnemar_p_value(10, 14) > 0.5  # 4 galaxies in 24 discordant ones: noise


def test_uncertainty_summary_says_whether_the_spread_finds_the_errors():
    from galaxymorph.evaluation import uncertainty_summary

    p_spiral = np.array([0.05, 0.95, 0.6, 0.4, 0.97])
    is_spiral = np.array([False, True, False, True, True])  # the two middle ones are wrong
    confident = np.abs(p_spiral - 0.5) >= 0.4
    honest = uncertainty_summary(p_spiral, is_spiral, np.array([0.01, 0.02, 0.2, 0.3, 0.01]), confident)
    assert honest == {"confident_share": 0.6, "confident_accuracy": 1.0, "std_error_auc": 1.0}
    misleading = uncertainty_summary(p_spiral, is_spiral, np.array([0.3, 0.2, 0.01, 0.02, 0.4]), confident)
    assert misleading["std_error_auc"] == 0.0
    assert "std_error_auc" not in uncertainty_summary(p_spiral, is_spiral, np.full(5, np.nan), confident)


def test_with_even_classes_is_bayes_rule_with_the_prior_changed_to_one_half():
    p_spiral = np.array([0.0, 0.06, 0.0424, 0.5, 1.0, np.nan])
    assert np.allclose(with_even_classes(p_spiral, 0.5), p_spiral, equal_nan=True)
    assert np.allclose(with_even_classes(p_spiral, 0.285), [0.0, 0.1380, 0.1000, 0.715, 1.0, np.nan], atol=1e-4, equal_nan=True)
