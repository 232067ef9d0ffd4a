import json

import numpy as np
import pytest

from galaxymorph import CatalogError, ModelError
from galaxymorph.evaluation import evaluate
from galaxymorph.prediction import PredictOptions
from galaxymorph.training.data import choose_classes, stratified_split
from galaxymorph.training.train import class_weights, get_lr, training_device, training_subset


def test_training_learns_generated_galaxies(trained_checkpoint, synthetic_catalog, tmp_path):
    """Held-out accuracy above 0.9 on galaxies the model never saw, after a short CPU training."""
    metadata = json.loads(trained_checkpoint.with_suffix(".json").read_text())
    assert metadata["architecture"] == "galaxynet" and metadata["classes"] == ["elliptical", "spiral"]
    assert len(metadata["training"]["history"]) == 6
    metrics = evaluate(synthetic_catalog, tmp_path, model=trained_checkpoint, split="test")
    assert metrics["rows"] == len(metadata["split"]["test"]) == 36
    assert metrics["spiral_vs_elliptical"]["accuracy"] > 0.9
    for name in ("metrics.json", "roc.png", "reliability.png", "confusion.png", "predictions.csv"):
        assert (tmp_path / name).stat().st_size > 0


def test_split_is_seeded_stratified_and_disjoint():
    labels = ["elliptical"] * 70 + ["spiral"] * 30
    split = stratified_split(labels, (0.7, 0.15, 0.15), seed=1)
    assert split == stratified_split(labels, (0.7, 0.15, 0.15), seed=1)
    assert split != stratified_split(labels, (0.7, 0.15, 0.15), seed=2)
    everything = split["train"] + split["val"] + split["test"]
    assert sorted(everything) == list(range(100))
    assert sum(labels[i] == "spiral" for i in split["test"]) == 4 or sum(labels[i] == "spiral" for i in split["test"]) == 5


def test_class_schemes():
    labels = ["elliptical", "edge_on_disk", "merger", "spiral_clockwise"]
    classes, targets = choose_classes(labels, "binary")
    assert classes == ("elliptical", "spiral") and targets == [0, 1, None, 1]
    classes, targets = choose_classes(labels, "gz1")
    assert targets == [0, 3, 4, 1]
    classes, targets = choose_classes(["ring", "no_ring", "ring"], "labels")
    assert classes == ("no_ring", "ring") and targets == [1, 0, 1]
    with pytest.raises(CatalogError, match="use the 'labels' scheme"):
        choose_classes(["ring", "no_ring"], "binary")


def test_learning_rate_schedule_warms_up_then_decays():
    rates = [get_lr(step, 100, 10, 1.0) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])) and rates[-1] < 0.05


def test_class_weights_balance_rare_classes():
    weights = class_weights(np.array([0] * 90 + [1] * 10), 2, power=1.0)
    assert float(weights[1] / weights[0]) == pytest.approx(9.0)
    assert float((weights[0] * 90 + weights[1] * 10) / 100) == pytest.approx(1.0)


def test_removing_the_class_weight_prior_restores_true_frequencies():
    """A model that outputs the weighted-loss optimum gets back the true posterior."""
    import torch

    from galaxymorph.models import create_model, logits_to_probabilities
    from galaxymorph.training.train import remove_class_weight_prior

    for classes in (("elliptical", "spiral"), ("a", "b", "c")):
        model = create_model("galaxynet", classes=classes).eval()
        weights = torch.tensor([0.5, 2.0, 4.0][: len(classes)])
        with torch.no_grad():
            model.output_layer().weight.zero_()
            true = torch.tensor([0.7, 0.2, 0.1][: len(classes)])
            true = true / true.sum()
            weighted = true * weights / (true * weights).sum()
            logits = torch.log(weighted)
            model.output_layer().bias.copy_(logits[1:] - logits[:1] if len(classes) == 2 else logits)
        remove_class_weight_prior(model, weights)
        probabilities = logits_to_probabilities(model(torch.rand(1, 3, 64, 64)))[0]
        assert torch.allclose(probabilities, true, atol=1e-5)


def test_label_smoothing_aims_every_output_at_the_smoothed_target():
    """With smoothing s over K classes the loss is lowest where the labelled class gets 1 - s + s/K,
    for the seed's single sigmoid logit as for several logits."""
    import torch

    from galaxymorph.training.train import classification_loss

    smoothing = 0.1
    single = torch.logit(torch.tensor([[1 - smoothing / 2]])).requires_grad_()
    classification_loss(single, torch.tensor([1]), smoothing=smoothing).backward()
    several = torch.log(torch.tensor([[smoothing / 3, 1 - smoothing + smoothing / 3, smoothing / 3]])).requires_grad_()
    classification_loss(several, torch.tensor([1]), smoothing=smoothing).backward()
    assert single.grad.abs().max() < 1e-6 and several.grad.abs().max() < 1e-6
    unsmoothed = torch.logit(torch.tensor([[1 - smoothing / 2]])).requires_grad_()
    classification_loss(unsmoothed, torch.tensor([1])).backward()
    assert unsmoothed.grad.abs().max() > 0.01


def test_too_small_a_catalog_is_refused_clearly(tmp_path, galaxy_jpeg):
    from galaxymorph.training import TrainConfig, train

    (tmp_path / "two.csv").write_text(f"file,label\n{galaxy_jpeg},elliptical\n{galaxy_jpeg},spiral\n")
    with pytest.raises(CatalogError, match="too few usable images to train on"):
        train(TrainConfig(labels=tmp_path / "two.csv", output=tmp_path / "m.pt", workers=0, progress=False, use_cache=False))


def test_evidence_penalty_moves_the_class_evidence_onto_the_galaxy(trained_checkpoint, synthetic_catalog, tmp_path):
    """Trained with the penalty, more of each Grad-CAM map lies inside the galaxy than without it."""
    from galaxymorph.training import TrainConfig, train

    penalised = train(TrainConfig(labels=synthetic_catalog, output=tmp_path / "penalised.pt", architecture="galaxynet",
                                  epochs=6, batch_size=32, workers=0, progress=False, use_cache=False,
                                  evidence_penalty=1.0))
    training = json.loads(penalised.with_suffix(".json").read_text())["training"]
    assert training["evidence_penalty"] == 1.0
    assert all(0 <= epoch["train_evidence_outside"] <= 1 for epoch in training["history"])
    assert _share_inside_galaxy(penalised, synthetic_catalog) > _share_inside_galaxy(trained_checkpoint, synthetic_catalog) + 0.1


def test_weight_averaging_keeps_a_moving_average_of_the_weights(trained_checkpoint, synthetic_catalog, tmp_path):
    """The fixture's run with a moving average of its weights keeps other weights, which learn as well."""
    import torch

    from galaxymorph.training import TrainConfig, train

    averaged = train(TrainConfig(labels=synthetic_catalog, output=tmp_path / "averaged.pt", architecture="galaxynet",
                                 epochs=6, batch_size=32, workers=0, progress=False, use_cache=False,
                                 weight_averaging=0.9))
    assert json.loads(averaged.with_suffix(".json").read_text())["training"]["weight_averaging"] == 0.9
    raw, kept = torch.load(trained_checkpoint, weights_only=True), torch.load(averaged, weights_only=True)
    assert raw.keys() == kept.keys() and not all(torch.equal(raw[key], kept[key]) for key in raw)
    metrics = evaluate(synthetic_catalog, tmp_path / "report", model=averaged, split="test")
    assert metrics["spiral_vs_elliptical"]["accuracy"] > 0.9


def test_a_share_of_the_training_split_is_stratified_and_nested():
    rows = np.arange(100, 300)
    labels = np.zeros(400, dtype=np.int64)
    labels[rows[:50]] = 1
    half, quarter = training_subset(rows, labels, 0.5, seed=3), training_subset(rows, labels, 0.25, seed=3)
    assert len(half) == 100 and np.sum(labels[half] == 1) == 25
    assert len(quarter) == 50 and set(quarter) <= set(half) <= set(rows)
    assert len(training_subset(rows, labels, 0.001, seed=3)) == 2  # one of each label at least
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match="train_share"):
            training_subset(rows, labels, share, seed=3)


def test_training_on_a_share_of_the_split_keeps_validation_and_test_whole(trained_checkpoint, synthetic_catalog, tmp_path):
    from galaxymorph.training import TrainConfig, train

    half = train(TrainConfig(labels=synthetic_catalog, output=tmp_path / "half.pt", architecture="galaxynet", epochs=1,
                             batch_size=32, workers=0, progress=False, use_cache=False, train_share=0.5, device="cpu"))
    whole, shared = (json.loads(path.with_suffix(".json").read_text()) for path in (trained_checkpoint, half))
    assert shared["split"] == whole["split"]
    assert shared["training"]["train_rows"] == len(whole["split"]["train"]) // 2
    assert (shared["training"]["train_share"], shared["training"]["device"]) == (0.5, "cpu")


def test_extra_labels_and_tight_views_add_to_the_training_split_alone(trained_checkpoint, synthetic_catalog, tmp_path):
    from galaxymorph.sources.synthetic import write_examples
    from galaxymorph.training import TrainConfig, train

    extra = tmp_path / "extra.csv"
    examples = write_examples(tmp_path / "extra", 20, seed=99, size=96)
    extra.write_text("file,label\n" + "".join(f"extra/{path.name},{kind}\n" for path, kind in examples))
    with pytest.raises(CatalogError, match="validation or test galaxies .* would leak"):  # ids named like the catalog's
        train(TrainConfig(labels=synthetic_catalog, output=tmp_path / "leak.pt", epochs=1, workers=0, progress=False,
                          use_cache=False, extra_labels=extra))
    for path, _ in examples:
        path.rename(path.with_name(f"extra-{path.name}"))
    extra.write_text("file,label\n" + "".join(f"extra/extra-{path.name},{kind}\n" for path, kind in examples))
    model = train(TrainConfig(labels=synthetic_catalog, output=tmp_path / "more.pt", architecture="galaxynet", epochs=1,
                              batch_size=32, workers=0, progress=False, use_cache=False, extra_labels=extra,
                              tight_views=1, tight_share=0.5))
    whole, more = (json.loads(path.with_suffix(".json").read_text()) for path in (trained_checkpoint, model))
    assert (more["split"]["val"], more["split"]["test"]) == (whole["split"]["val"], whole["split"]["test"])
    assert len(more["split"]["train"]) == len(whole["split"]["train"]) + 20
    assert more["training"]["extra_rows"] == 20 and more["training"]["tight_views"] == 1


def test_an_unusable_training_device_is_refused_clearly():
    import torch

    with pytest.raises(ValueError, match="unknown training device 'gpu'"):
        training_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            training_device("cuda")
    assert training_device("cpu").type == "cpu"


@pytest.mark.gpu
def test_a_model_trained_on_a_gpu_classifies_on_the_cpu(synthetic_catalog, tmp_path):
    import torch

    from galaxymorph.training import TrainConfig, train

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    trained = train(TrainConfig(labels=synthetic_catalog, output=tmp_path / "gpu.pt", architecture="galaxynet", epochs=6,
                                batch_size=32, workers=0, progress=False, use_cache=False, evidence_penalty=1.0))
    assert json.loads(trained.with_suffix(".json").read_text())["training"]["device"] == "cuda"
    metrics = evaluate(synthetic_catalog, tmp_path / "report", model=trained, split="test",
                       options=PredictOptions(workers=0, backend="torch"))  # on the CPU
    assert metrics["spiral_vs_elliptical"]["accuracy"] > 0.9


def test_evidence_penalty_needs_class_activation_maps(synthetic_catalog, tmp_path):
    from galaxymorph.training import TrainConfig, train

    with pytest.raises(ModelError, match="class-activation maps"):
        train(TrainConfig(labels=synthetic_catalog, output=tmp_path / "seed.pt", architecture="seed",
                          evidence_penalty=1.0, workers=0, progress=False, use_cache=False))


def _share_inside_galaxy(checkpoint, catalog) -> float:
    """Mean share of the Grad-CAM maps inside the central galaxy, on the test split's images."""
    from galaxymorph.catalog import read_labelled_catalog
    from galaxymorph.explain import attributions, share_inside
    from galaxymorph.models import load_model
    from galaxymorph.preprocess.decode import read_model_input
    from galaxymorph.preprocess.framing import central_segment

    loaded = load_model(checkpoint)
    labelled = read_labelled_catalog(catalog)
    test_ids = set(loaded.metadata["split"]["test"])
    images = np.stack([read_model_input(path, loaded.preprocessing).pixels
                       for identifier, path in zip(labelled.ids, labelled.files) if identifier in test_ids])
    maps, _ = attributions(loaded, images)
    shares = [share_inside(map_, segment) for map_, image in zip(maps, images)
              if (segment := central_segment(image.mean(axis=0))) is not None]
    return float(np.mean(shares))
