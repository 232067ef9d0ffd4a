"""A self-supervised encoder against the supervised model's features: linear probe on gz1-sdss.

Usage:
  python benchmarks/pretraining.py catalog pretrain.csv
  galaxymorph pretrain pretrain.csv -o runs/encoder.pt --epochs 100
  python benchmarks/pretraining.py probe runs/encoder.pt galaxynet galaxynet_ensemble random [--train-share 0.1]

`catalog` writes the unlabelled images pre-training may see: gz1-sdss's training and validation
galaxies (the default model's saved split, never its test split) and gz2-sdss's cutouts except its
210 rule-labelled ellipticals (scored like a test set by other_framings.py); never zoomed-spirals.

`probe` embeds the elliptical and spiral galaxies of the default model's gz1-sdss training and
validation splits with each model (`Classifier.embeddings`: the pooled last-block features,
averaged over members and the 8 rotations and mirror images, unit length; "random" is the untrained
architecture, the floor), fits a logistic regression on the training split (or a stratified
`--train-share` of it; the L2 weight chosen by 5-fold cross-validation on those rows) and scores
it on the validation split: accuracy, ROC AUC, log loss.
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import numpy as np
import torch

from galaxymorph import Preprocessing, load_model
from galaxymorph.catalog import read_labelled_catalog
from galaxymorph.config import DEFAULT_MODEL, SPLIT_SEED
from galaxymorph.labels import binary_label
from galaxymorph.metrics import log_loss, roc_auc
from galaxymorph.models import LoadedModel, create_model
from galaxymorph.prediction import Classifier
from galaxymorph.preprocess.parallel import model_inputs
from galaxymorph.training.data import rows_of_split
from galaxymorph.training.train import training_subset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1)


def write_catalog(output: Path) -> None:
    default = load_model(DEFAULT_MODEL)
    kept = set(default.metadata["split"]["train"]) | set(default.metadata["split"]["val"])
    rows = [(row["objid"], DATA / "gz1-sdss" / row["file"])
            for row in csv.DictReader(open(DATA / "gz1-sdss" / "labels.csv")) if row["objid"] in kept]
    gz1 = len(rows)
    rows += [(f"gz2-{row['asset_id']}", DATA / "gz2-sdss" / row["file"])
             for row in csv.DictReader(open(DATA / "gz2-sdss" / "catalog.csv")) if row["rule_label"] != "elliptical"]
    with open(output, "w", newline="") as stream:
        csv.writer(stream).writerows([("id", "file"), *rows])
    print(f"{output}: {gz1} gz1-sdss training and validation galaxies, {len(rows) - gz1} gz2-sdss cutouts")


def logistic_regression(features: np.ndarray, positives: np.ndarray, penalty: float) -> torch.nn.Linear:
    """L2-penalised logistic regression, fitted to convergence with L-BFGS."""
    x, y = torch.from_numpy(features).double(), torch.from_numpy(positives).double()
    layer = torch.nn.Linear(features.shape[1], 1).double()
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(layer(x)[:, 0], y) + penalty * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return layer


def predicted(layer: torch.nn.Linear, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(layer(torch.from_numpy(features).double())[:, 0]).numpy()


def chosen_penalty(features: np.ndarray, positives: np.ndarray) -> float:
    folds = np.random.default_rng(SPLIT_SEED).permutation(len(features)) % 5
    losses = [np.mean([log_loss(predicted(logistic_regression(features[folds != k], positives[folds != k], penalty),
                                          features[folds == k]), positives[folds == k]) for k in range(5)])
              for penalty in PENALTIES]
    return PENALTIES[int(np.argmin(losses))]


def model_of(name: str) -> LoadedModel:
    if name == "random":
        torch.manual_seed(SPLIT_SEED)
        return LoadedModel("random", create_model("galaxynet").eval(), Preprocessing(), {"encoder_only": True})
    return load_model(name)


def probe(models: list[str], train_share: float, workers: int) -> None:
    split = load_model(DEFAULT_MODEL)
    catalog = read_labelled_catalog(DATA / "gz1-sdss" / "labels.csv")
    binary = np.array([binary_label(label) or "" for label in catalog.labels])
    rows = {name: np.array([i for i in rows_of_split(catalog.ids, split, name, "gz1-sdss") if binary[i]])
            for name in ("train", "val")}
    rows["train"] = rows["train"][training_subset(np.arange(len(rows["train"])), binary[rows["train"]], train_share, SPLIT_SEED)]
    positives = {name: (binary[indices] == "spiral").astype(float) for name, indices in rows.items()}
    print(f"{platform.machine()}, {len(rows['train'])} training and {len(rows['val'])} validation galaxies "
          f"(elliptical or spiral; training share {train_share})")
    print("| model | L2 weight | accuracy | ROC AUC | log loss | embedding seconds |\n|---|---|---|---|---|---|")
    inputs: dict[str, dict[str, np.ndarray]] = {}
    for name in models:
        loaded = model_of(name)
        key = str(loaded.preprocessing.to_dict())
        if key not in inputs:
            inputs[key] = {split_name: model_inputs([catalog.files[i] for i in indices], loaded.preprocessing, workers)
                           for split_name, indices in rows.items()}
        started = time.perf_counter()
        classifier = Classifier(loaded, backend="torch", features=True)
        features = {split_name: np.concatenate([classifier.embeddings(images[i:i + 256]) for i in range(0, len(images), 256)])
                    for split_name, images in inputs[key].items()}
        seconds = time.perf_counter() - started
        mean, std = features["train"].mean(0), features["train"].std(0) + 1e-6
        train, val = ((features[s] - mean) / std for s in ("train", "val"))
        penalty = chosen_penalty(train, positives["train"])
        p_spiral = predicted(logistic_regression(train, positives["train"], penalty), val)
        accuracy = np.mean((p_spiral >= 0.5) == positives["val"])
        print(f"| {name} | {penalty:g} | {accuracy:.4f} | {roc_auc(p_spiral, positives['val'].astype(bool)):.4f} | "
              f"{log_loss(p_spiral, positives['val']):.4f} | {seconds:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("catalog").add_argument("output", type=Path)
    probing = commands.add_parser("probe")
    probing.add_argument("models", nargs="+", help="checkpoints, bundled names, or 'random'")
    probing.add_argument("--train-share", type=float, default=1.0)
    probing.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.command == "catalog":
        write_catalog(args.output)
    else:
        probe(args.models, args.train_share, args.workers)


if __name__ == "__main__":
    main()
