"""The training loop: config, data, model, optimiser, evaluate, schedule, loop, checkpoint."""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from galaxymorph.catalog import LabelledCatalog, read_labelled_catalog
from galaxymorph.config import BATCH_SIZE, CHANNELS, SPLIT_FRACTIONS, SPLIT_SEED, Preprocessing, default_workers
from galaxymorph.errors import CatalogError, ModelError
from galaxymorph.labels import has_spiral_semantics, mirror_permutation, spiral_probability
from galaxymorph.metrics import binary_summary
from galaxymorph.models import (GalaxyClassifier, GalaxyEnsemble, LoadedModel, create_model, load_model, logits_to_probabilities,
                                save_checkpoint)
from galaxymorph.preprocess.augment import SurveyAugmentation, TightCutouts, centre_view, survey_augment, symmetry_augment
from galaxymorph.training.data import (choose_classes, decode_files, decode_tight_views, galaxy_masks, stratified_split,
                                       training_preprocessing)


RECALIBRATION_IMAGES = 1024
ZOOM_RANGE = (0.8, 1.25)
"""Zoom jitter of training images: framing measures galaxy sizes to about this precision."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in the checkpoint's metadata."""

    labels: Path
    output: Path
    architecture: str = "galaxynet"
    classes: str = "binary"
    epochs: int = 30
    batch_size: int = BATCH_SIZE
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    class_weight_power: float = 0.5
    augment: bool = True
    survey_augmentation: SurveyAugmentation | None = field(default_factory=SurveyAugmentation)
    """With `augment`: blur, colour-stretch, noise and JPEG changes that mimic other surveys (None: off)."""
    tight_views: int = 0
    """With `augment`: tight, zoomed renderings made of each training image (`tight_cutout`), in
    which the galaxy fills or overflows the frame (0: none)."""
    tight_share: float = 0.3
    """With `tight_views`: share of the training images replaced, each time they are drawn, by one of their tight views."""
    tight_cutouts: TightCutouts = field(default_factory=TightCutouts)
    evidence_penalty: float = 0.0
    """Weight of `evidence_outside_galaxy` in the loss (0: off): the share of the labelled class's
    activation map that lies outside the central galaxy."""
    label_smoothing: float = 0.0
    """Share of each training target spread evenly over all classes, for labels that are sometimes
    wrong (0: off)."""
    weight_averaging: float = 0.0
    """Decay of an exponential moving average of the weights, updated every step; the average is
    what each epoch evaluates and what the checkpoint keeps (0: off, the raw weights)."""
    seed: int = SPLIT_SEED
    split_seed: int | None = None
    """Seed of the train/val/test split (None: `seed`); members of an ensemble share one split."""
    split_fractions: tuple[float, float, float] = SPLIT_FRACTIONS
    max_rows: int | None = None
    extra_labels: Path | None = None
    """A second labelled catalog whose rows are added to the training split alone (pseudo-labels of
    unlabelled images, another survey's labels); `labels` keeps its own split."""
    train_share: float = 1.0
    """Share of the training split to train on, a seeded subset stratified by label (learning curves);
    the validation and test splits stay whole."""
    workers: int | None = None
    """Decoding processes (None: one per core, `config.default_workers`)."""
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    init_from: str | None = None
    """A trained model (bundled name or checkpoint) whose architecture, preprocessing and weights the
    new model starts from (its output layer too when the classes are the same)."""
    teacher: str | None = None
    """A trained model (bundled name or checkpoint) whose probabilities the new model learns instead
    of the labels (knowledge distillation; Hinton et al. 2015), on the same augmented images; a
    galaxynet learns an ensemble with one head per member (`GalaxyNet` `heads`), so that its
    p_spiral_std stays. Unweighted: the teacher's probabilities already follow the class frequencies."""
    distill_weight: float = 1.0
    """With `teacher`: the share of the loss that is the teacher's; the rest is the labels' (unweighted)."""
    freeze_epochs: int = 0
    """Fine-tuning: epochs that train the new output layer alone, before unfreezing."""
    unfrozen_blocks: int | None = None
    """Fine-tuning: how many of the last feature blocks train after the frozen epochs (None: all)."""
    device: str | None = None
    """Where the model trains ("cpu", "cuda", ...; None: a GPU when there is one). Augmentation stays
    on the CPU, so a seed gives the same images everywhere."""
    progress: bool = True
    use_cache: bool = True

    def __post_init__(self) -> None:
        self.workers = default_workers(self.workers)
        if self.tight_views < 0:
            raise ValueError(f"tight_views must be at least 0, got {self.tight_views}")
        if not 0.0 <= self.tight_share <= 1.0:
            raise ValueError(f"tight_share must be in [0, 1], got {self.tight_share}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")


def get_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up, then cosine decay to 1% of the base rate."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def class_weights(targets: np.ndarray, n_classes: int, power: float) -> torch.Tensor:
    """Weights proportional to count**-power, scaled so that the average sample weighs 1.

    power 0 ignores the imbalance, 1 balances the classes fully; 0.5 is a compromise that keeps
    probabilities closer to the true class frequencies.
    """
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1) ** -power, 0.0)
    weights /= np.sum(weights * counts) / counts.sum()
    return torch.tensor(weights, dtype=torch.float32)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
                        smoothing: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy for one logit (the seed's sigmoid output), cross-entropy otherwise;
    `smoothing` moves that share of each target evenly onto all classes (label smoothing)."""
    if logits.shape[1] == 1:
        sample_weights = weights[targets] if weights is not None else None
        soft_targets = targets.float() * (1 - smoothing) + smoothing / 2
        return F.binary_cross_entropy_with_logits(logits[:, 0], soft_targets, weight=sample_weights)
    return F.cross_entropy(logits, targets, weight=weights, label_smoothing=smoothing)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of student logits (N, H, K) against the teacher's probabilities from logits of
    the same shape (sigmoid for one logit, softmax otherwise): KL divergence plus a constant."""
    if student.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))
    return -(torch.softmax(teacher, dim=-1) * torch.log_softmax(student, dim=-1)).sum(dim=-1).mean()


def evidence_outside_galaxy(model: GalaxyClassifier, features: torch.Tensor, targets: torch.Tensor,
                            masks: torch.Tensor) -> torch.Tensor:
    """Mean share of each image's class-activation map for its labelled class (upsampled to the
    input as Grad-CAM is) that lies outside its galaxy mask (N, S, S) in [0, 1].

    Grad-CAM keeps the map's positive part; here a softplus stands in for it, so that a map with no
    positive evidence anywhere (which explains nothing) still has a gradient towards evidence on
    the galaxy instead of escaping the penalty.
    """
    maps = model.class_activation_maps(features)
    if maps.shape[1] == 1:  # one sigmoid logit z: the classes' logits are (-z/2, z/2), as explained
        maps = torch.cat([-maps / 2, maps / 2], dim=1)
    maps = F.softplus(maps[torch.arange(len(targets)), targets])[:, None]
    maps = F.interpolate(maps, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    outside = (maps * (1 - masks)).sum(dim=(1, 2))
    return (outside / maps.sum(dim=(1, 2))).mean()


@torch.no_grad()
def remove_class_weight_prior(model: GalaxyClassifier, weights: torch.Tensor) -> None:
    """Shift the output bias so that probabilities follow the true class frequencies again.

    A loss weighted by w_c learns logits raised by log w_c; subtracting it afterwards keeps what the
    weighting taught the features about rare classes without its bias (logit adjustment, Menon et
    al. 2021, ICLR).
    """
    log_weights = torch.log(weights)
    bias = model.output_layer().bias
    if model.num_outputs == 1:
        bias -= log_weights[1] - log_weights[0]
    else:
        bias.view(-1, len(log_weights)).sub_(log_weights)  # each head's


def frozen_blocks(model: GalaxyClassifier, epoch: int, config: TrainConfig) -> list[torch.nn.Module]:
    """The feature blocks that do not train in this epoch (none unless fine-tuning)."""
    if config.init_from is None:
        return []
    blocks = model.feature_blocks()
    if epoch <= config.freeze_epochs:
        return blocks
    trainable = len(blocks) if config.unfrozen_blocks is None else config.unfrozen_blocks
    return blocks[:max(0, len(blocks) - trainable)]


def set_training_mode(model: GalaxyClassifier, frozen: list[torch.nn.Module]) -> None:
    """Train mode, except that frozen blocks keep their weights and batch-norm statistics."""
    model.train()
    for block in frozen:
        block.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    for block in frozen:
        for parameter in block.parameters():
            parameter.requires_grad_(False)


def centre_batches(images: np.ndarray, rows: np.ndarray, image_size: int, batch_size: int) -> list[torch.Tensor]:
    """The un-augmented model inputs (`centre_view`) of training views `images[rows]`, in batches."""
    return [centre_view(torch.from_numpy(images[rows[i:i + batch_size]]), image_size)
            for i in range(0, len(rows), batch_size)]


@torch.no_grad()
def recalibrate_batch_norm(model: GalaxyClassifier, batches: list[torch.Tensor],
                           frozen: list[torch.nn.Module]) -> None:
    """Recompute the trainable batch-norm statistics for the current weights, as an exact average
    over `batches`.

    Running averages lag behind fast-changing weights (and start from unit variance, far from the
    variance of dark sky images), so early evaluations would judge stale statistics.
    """
    frozen_layers = {id(m) for block in frozen for m in block.modules()}
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and id(m) not in frozen_layers]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
    set_training_mode(model, frozen)
    for batch in batches:
        model(batch)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.eval()


def start_model(config: TrainConfig, classes: tuple[str, ...], *, heads: int = 1) -> tuple[GalaxyClassifier, str, Preprocessing, bool]:
    """A new model (with `heads` sets of logits, for distillation from an ensemble), or one that
    starts from a trained model's weights (from an ensemble, its first member): all of them when it
    has the same `classes` (training goes on, with its own heads unless `heads` asks for more: a
    one-headed output layer is copied into each), all but the output layer otherwise (fine-tuning
    to a new label set, or from a `pretrain` encoder). Last: whether a trained output layer was kept."""
    if config.init_from is None:
        extra = {"heads": heads} if heads > 1 else {}
        return create_model(config.architecture, classes=classes, **extra), config.architecture, config.preprocessing, False
    pretrained = load_model(config.init_from)
    architecture = pretrained.metadata["architecture"]
    pretrained_model = pretrained.model.members[0] if isinstance(pretrained.model, GalaxyEnsemble) else pretrained.model
    trained_head = tuple(pretrained_model.classes) == classes and not pretrained.metadata.get("encoder_only")
    if trained_head and heads == 1:
        heads = getattr(pretrained_model, "heads", 1)
    model = create_model(architecture, classes=classes, **({"heads": heads} if heads > 1 else {}))
    head = next(name for name, module in model.named_modules() if module is model.output_layer())
    head_keys = {f"{head}.{key}" for key in model.output_layer().state_dict()}
    kept = {key: value for key, value in pretrained_model.state_dict().items() if key not in head_keys}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or set(missing) != head_keys:
        raise ModelError(f"weights of {config.init_from} do not fit {architecture}: missing {missing}, unexpected {unexpected}")
    if trained_head:
        _copy_output_layer(pretrained_model.output_layer(), model.output_layer(), config.init_from)
    return model, architecture, pretrained.preprocessing, trained_head


@torch.no_grad()
def _copy_output_layer(trained: torch.nn.Linear, new: torch.nn.Linear, source: str) -> None:
    """The trained output layer's weights into the new one, repeated once per head."""
    heads, left = divmod(new.out_features, trained.out_features)
    if left or new.in_features != trained.in_features:
        raise ModelError(f"the output layer of {source} ({trained.in_features} -> {trained.out_features}) does not "
                         f"fit one of {new.in_features} -> {new.out_features}")
    new.weight.copy_(trained.weight.repeat(heads, 1))
    new.bias.copy_(trained.bias.repeat(heads))


def load_teacher(config: TrainConfig, classes: tuple[str, ...]) -> tuple[LoadedModel | None, int]:
    """The teacher (None without one), its model in eval mode, and the heads its student needs: one
    per member of an ensemble, else one."""
    if config.teacher is None:
        return None, 1
    teacher = load_model(config.teacher)
    teacher.require_trained_head()
    if tuple(teacher.classes) != classes:
        raise ModelError(f"teacher {teacher.name} has classes {list(teacher.classes)}, the student {list(classes)}: "
                         "choose --classes to match")
    teacher.model.eval()
    return teacher, len(teacher.model.members) if isinstance(teacher.model, GalaxyEnsemble) else 1


def training_device(requested: str | None) -> torch.device:
    """The requested device, else the GPU when PyTorch sees one, else the CPU."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise ValueError(f"unknown training device {requested!r}: use cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"training device {requested!r}: torch sees no CUDA GPU here")
    return device


def training_subset(rows: np.ndarray, labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A seeded `share` of `rows` (at least one per label), stratified by `labels[rows]`; a smaller
    share of the same seed is a subset of a larger one."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"train_share must be in (0, 1], got {share}")
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels[rows]):
        members = rng.permutation(rows[labels[rows] == label])
        kept.append(members[:max(1, int(round(share * len(members))))])
    return np.sort(np.concatenate(kept))


@torch.no_grad()
def estimate_metrics(model: GalaxyClassifier, images: np.ndarray, targets: np.ndarray, *,
                     output_size: int, batch_size: int) -> dict[str, float]:
    """Loss, accuracy and, where the classes allow, spiral-vs-elliptical metrics on a held-out set."""
    model.eval()
    device = next(model.parameters()).device
    logits = torch.cat([
        model(centre_view(torch.from_numpy(images[start:start + batch_size]), output_size).to(device)).cpu()
        for start in range(0, len(images), batch_size)
    ])
    targets_tensor = torch.from_numpy(targets)
    probabilities = logits_to_probabilities(logits).numpy()
    metrics = {
        "loss": float(classification_loss(logits, targets_tensor)),
        "accuracy": float(np.mean(probabilities.argmax(1) == targets)),
    }
    if has_spiral_semantics(model.classes):
        p_spiral = spiral_probability(probabilities, model.classes)
        is_spiral = spiral_probability(np.eye(len(model.classes))[targets], model.classes)
        known = is_spiral != 0.5
        metrics.update({f"spiral_{k}": v for k, v in binary_summary(p_spiral[known], is_spiral[known] > 0.5).items()})
    return metrics


def selection_score(metrics: dict[str, dict[str, float]]) -> tuple[float, float]:
    """What 'best checkpoint' means: spiral ROC AUC when defined, accuracy otherwise; ties go to the
    lower validation loss (a perfect AUC is reached long before the probabilities settle). Both are
    averaged over the validation sets: the split as it is and, with tight views, its tight renderings."""
    sets = list(metrics.values())
    return (float(np.mean([m.get("spiral_roc_auc", m["accuracy"]) for m in sets])),
            -float(np.mean([m["loss"] for m in sets])))


def validation_sets(images: np.ndarray, targets: np.ndarray, rows: np.ndarray, files: list[Path],
                    preprocessing: Preprocessing, config: TrainConfig, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The validation images and targets: `validation`, the split as it is, and with tight views
    `tight_validation`, one tight rendering of each (seeded by the split, the same for every member
    of an ensemble), so that the best epoch is also good on galaxies that fill or overflow the frame."""
    sets = {"validation": (images[rows], targets[rows])}
    if config.augment and config.tight_views:
        tight, decoded = decode_tight_views([files[i] for i in rows], preprocessing, views=1, seed=seed,
                                            settings=config.tight_cutouts, workers=config.workers, use_cache=config.use_cache)
        sets["tight_validation"] = (tight[decoded[:, 0], 0], targets[rows][decoded[:, 0]])
    return sets


@dataclass
class TrainingImages:
    """Decoded training images (uint8, wider than the model input) and, with the evidence penalty,
    their galaxy masks; with tight views, each drawn image is replaced by one of its tight views
    with probability `tight_share`."""

    images: np.ndarray
    masks: np.ndarray | None
    tight: np.ndarray | None = None
    """Tight views (R, V, 3, S, S) of the rows that `tight_index` maps to 0..R-1 (-1: none)."""
    tight_masks: np.ndarray | None = None
    tight_index: np.ndarray | None = None
    tight_decoded: np.ndarray | None = None
    tight_share: float = 0.0

    def batch(self, rows: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """The images of `rows` (N, 3, S, S), with the mask as a fourth channel when there are masks,
        so that it travels through rotation and zoom with the image."""
        images = self.images[rows]
        masks = None if self.masks is None else self.masks[rows]
        if self.tight is not None:
            chosen = (torch.rand(len(rows), generator=generator) < self.tight_share).numpy()
            views = torch.randint(self.tight.shape[1], (len(rows),), generator=generator).numpy()
            index = self.tight_index[rows]
            chosen &= (index >= 0) & self.tight_decoded[index, views]
            images[chosen] = self.tight[index[chosen], views[chosen]]
            if masks is not None:
                masks[chosen] = self.tight_masks[index[chosen], views[chosen]]
        batch = torch.from_numpy(images)
        return batch if masks is None else torch.cat([batch, torch.from_numpy(masks)[:, None]], dim=1)


def tight_training_views(training: TrainingImages, files: list[Path], rows: np.ndarray, preprocessing: Preprocessing,
                         config: TrainConfig) -> TrainingImages:
    """`training` with `config.tight_views` tight views of each of `rows` (the training rows)."""
    tight, decoded = decode_tight_views([files[i] for i in rows], preprocessing, views=config.tight_views,
                                        seed=config.seed, settings=config.tight_cutouts, workers=config.workers,
                                        use_cache=config.use_cache)
    index = np.full(len(training.images), -1, dtype=np.int64)
    index[rows] = np.arange(len(rows))
    masks = None
    if training.masks is not None:
        masks = galaxy_masks(tight.reshape(-1, *tight.shape[2:]), preprocessing.image_size).reshape(*tight.shape[:2], *tight.shape[3:])
    return replace(training, tight=tight, tight_masks=masks, tight_index=index, tight_decoded=decoded,
                   tight_share=config.tight_share)


def labelled_split(config: TrainConfig) -> tuple[LabelledCatalog, dict[str, list[int]], int, int]:
    """The catalog to train on, its split, the split's seed and the number of extra-label rows.

    The split is drawn over all rows by their raw labels, so models trained on different class
    schemes of the same catalog share one test set; extra labels join the training split alone."""
    split_seed = config.seed if config.split_seed is None else config.split_seed
    catalog = read_labelled_catalog(config.labels)
    if config.max_rows is not None and config.max_rows < len(catalog):
        keep = np.random.default_rng(split_seed).choice(len(catalog), config.max_rows, replace=False)
        catalog = catalog.subset(sorted(keep.tolist()))
    split = stratified_split(catalog.labels, config.split_fractions, split_seed)
    if config.extra_labels is None:
        return catalog, split, split_seed, 0
    extra = read_labelled_catalog(config.extra_labels)
    held_out = {catalog.ids[i] for i in split["val"] + split["test"]} | {catalog.files[i] for i in split["val"] + split["test"]}
    leaked = [row_id for row_id, file in zip(extra.ids, extra.files) if row_id in held_out or file in held_out]
    if leaked:
        raise CatalogError(f"extra labels {config.extra_labels}: {len(leaked)} row(s) are validation or test galaxies "
                           f"of {config.labels} (e.g. {leaked[0]}); they would leak into training")
    split["train"] += list(range(len(catalog), len(catalog) + len(extra)))
    catalog = LabelledCatalog(catalog.ids + extra.ids, catalog.files + extra.files, catalog.labels + extra.labels, catalog.source)
    return catalog, split, split_seed, len(extra)


@dataclass
class TrainingData:
    """Decoded images ready for the loop: the training images, every row's class index (-1: none),
    the training rows, and the validation sets (`validation_sets`)."""

    training: TrainingImages
    targets: np.ndarray
    train_rows: np.ndarray
    validation: dict[str, tuple[np.ndarray, np.ndarray]]
    unreadable: int


def prepare_data(config: TrainConfig, catalog: LabelledCatalog, split: dict[str, list[int]], targets: list[int | None], *,
                 preprocessing: Preprocessing, split_seed: int) -> TrainingData:
    """Decode the catalog (through the cache) and choose the usable rows of each split."""
    images, errors = decode_files(catalog.files, training_preprocessing(preprocessing),
                                  workers=config.workers, use_cache=config.use_cache)
    masks = galaxy_masks(images, preprocessing.image_size) if config.evidence_penalty else None
    unreadable = [e for e in errors if e]
    if unreadable:
        warnings.warn(f"{len(unreadable)} unreadable images left out of training, e.g. {unreadable[0]}", stacklevel=3)
    usable = {name: np.array([i for i in rows if targets[i] is not None and not errors[i]], dtype=np.int64)
              for name, rows in split.items()}
    target_array = np.array([t if t is not None else -1 for t in targets], dtype=np.int64)
    train_rows, val_rows = usable["train"], usable["val"]
    if config.train_share != 1.0:
        train_rows = training_subset(train_rows, target_array, config.train_share, split_seed)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise CatalogError(f"catalog {config.labels}: too few usable images to train on "
                           f"({len(train_rows)} for training, {len(val_rows)} for validation)")
    validation = validation_sets(images, target_array, val_rows, catalog.files, preprocessing, config, split_seed)
    training = TrainingImages(images, masks)
    if config.augment and config.tight_views:
        training = tight_training_views(training, catalog.files, train_rows, preprocessing, config)
    return TrainingData(training, target_array, train_rows, validation, len(unreadable))


def augmented_batch(data: TrainingData, rows: np.ndarray, config: TrainConfig, *, image_size: int,
                    permutation: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Images, targets and galaxy masks (None without the evidence penalty) of `rows`, augmented."""
    batch, targets = data.training.batch(rows, generator), torch.from_numpy(data.targets[rows])
    if config.augment:
        batch, targets = symmetry_augment(batch, targets, output_size=image_size, mirror_permutation=permutation,
                                          generator=generator, zoom_range=ZOOM_RANGE)
    else:
        batch = centre_view(batch, image_size)
    masks = None
    if data.training.masks is not None:
        batch, masks = batch[:, :CHANNELS], batch[:, CHANNELS]
    if config.augment and config.survey_augmentation is not None:
        batch = survey_augment(batch, generator, config.survey_augmentation)
    return batch, targets, masks


def train_step(model: GalaxyClassifier, optimizer: torch.optim.Optimizer, batch: torch.Tensor, targets: torch.Tensor, *,
               masks: torch.Tensor | None, weights: torch.Tensor, config: TrainConfig,
               teacher: GalaxyClassifier | None = None) -> tuple[float, float | None]:
    """One optimiser step on a batch (on the model's device); the classification loss (against the
    teacher's probabilities where there is one) and the evidence penalty (None when off)."""
    features = model.forward_features(batch)
    if teacher is None:
        loss = classification_loss(model.forward_head(features), targets, weights, config.label_smoothing)
    else:
        with torch.no_grad():
            taught = teacher.member_outputs(batch)[0]
        student = model.head_logits(features) if hasattr(model, "head_logits") else model.forward_head(features)[:, None]
        loss = distillation_loss(student, taught if taught.shape[1] == student.shape[1] else taught.mean(dim=1, keepdim=True))
        if config.distill_weight < 1.0:
            labels = classification_loss(student.mean(dim=1), targets, weights, config.label_smoothing)
            loss = config.distill_weight * loss + (1.0 - config.distill_weight) * labels
    classification, penalty = loss.item(), None
    if masks is not None:
        outside = evidence_outside_galaxy(model, features, targets, masks)
        penalty = outside.item()
        loss = loss + config.evidence_penalty * outside
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return classification, penalty


def train(config: TrainConfig) -> Path:
    """Train a model on a labelled catalog and write its best checkpoint; returns the weights path."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = training_device(config.device)
    catalog, split, split_seed, extra_rows = labelled_split(config)
    classes, targets = choose_classes(catalog.labels, config.classes)
    teacher, heads = load_teacher(config, classes)
    model, architecture, preprocessing, kept_output_layer = start_model(config, classes, heads=heads)
    if teacher is not None and teacher.preprocessing.image_size != preprocessing.image_size:  # the student's own, or --from's
        raise ModelError(f"teacher {teacher.name} takes {teacher.preprocessing.image_size} px inputs, "
                         f"the student {preprocessing.image_size} px")
    if model.input_size not in (None, preprocessing.image_size):
        raise ModelError(f"{architecture} takes {model.input_size} px inputs, not {preprocessing.image_size} px")
    if config.evidence_penalty and not hasattr(model, "class_activation_maps"):
        raise ModelError(f"the evidence penalty needs a model with class-activation maps (galaxynet); {architecture} has none")
    data = prepare_data(config, catalog, split, targets, preprocessing=preprocessing, split_seed=split_seed)

    model.to(device)
    if teacher is not None:
        teacher.model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    weights = (class_weights(data.targets[data.train_rows], len(classes), config.class_weight_power) if teacher is None
               else torch.ones(len(classes))).to(device)  # a teacher's probabilities follow the class frequencies already
    if kept_output_layer:  # the trained output follows the true class frequencies: weight it as training would
        remove_class_weight_prior(model, 1 / weights)
    history, best_epoch = run_epochs(model, optimizer, data, config, weights=weights, image_size=preprocessing.image_size,
                                     device=device, generator=generator, teacher=None if teacher is None else teacher.model)
    model.cpu()
    weights = weights.cpu()
    remove_class_weight_prior(model, weights)
    final = {name: estimate_metrics(model, *held_out, output_size=preprocessing.image_size, batch_size=config.batch_size)
             for name, held_out in data.validation.items()}
    record = {**config_record(config), "rows": len(catalog), "unreadable": data.unreadable,
              "train_rows": len(data.train_rows), "device": device.type, "extra_rows": extra_rows,
              "class_weights": weights.tolist(), "class_weight_prior_removed": True, "zoom_range": list(ZOOM_RANGE),
              "optimizer": "AdamW", "schedule": "linear warm-up, cosine decay", "history": history}
    return save_checkpoint(model, config.output, architecture=architecture, preprocessing=preprocessing, training=record,
                           split={"seed": split_seed, "fractions": list(config.split_fractions),
                                  **{name: [catalog.ids[i] for i in rows] for name, rows in split.items()}},
                           metrics={"best_epoch": best_epoch, **final})


def config_record(config: TrainConfig) -> dict:
    """The config whole, as the checkpoint's metadata keeps it: the catalogs by file name (`data`,
    `extra_labels`), the class scheme as `class_scheme`; left out are what the checkpoint records
    itself (architecture, preprocessing, its own path) and how this machine ran it (workers,
    progress, cache)."""
    record = asdict(config)
    for name in ("architecture", "preprocessing", "output", "workers", "progress", "use_cache", "labels", "classes"):
        del record[name]
    for name in ("init_from", "teacher"):  # a model's name or its path, as given
        record[name] = None if record[name] is None else str(record[name])
    return {"data": Path(config.labels).name, "class_scheme": config.classes, **record,
            "extra_labels": Path(config.extra_labels).name if config.extra_labels else None,
            "tight_cutouts": record["tight_cutouts"] if config.tight_views else None}


def run_epochs(model: GalaxyClassifier, optimizer: torch.optim.Optimizer, data: TrainingData, config: TrainConfig, *,
               weights: torch.Tensor, image_size: int, device: torch.device, generator: torch.Generator,
               teacher: GalaxyClassifier | None = None) -> tuple[list[dict], int]:
    """Train for `config.epochs`, evaluating after each, and leave the model with the best epoch's
    weights (of the weight average when there is one); returns the history and the best epoch."""
    permutation = mirror_permutation(model.classes)
    steps_per_epoch = math.ceil(len(data.train_rows) / config.batch_size)
    total_steps, warmup_steps = steps_per_epoch * config.epochs, int(config.warmup_epochs * steps_per_epoch)
    recalibration_batches = [batch.to(device) for batch in centre_batches(
        data.training.images, data.train_rows[:RECALIBRATION_IMAGES], image_size, config.batch_size)]
    averaged = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.weight_averaging))
        if config.weight_averaging else None)
    evaluated = model if averaged is None else averaged.module
    history, best, best_state, best_epoch, step = [], None, None, 0, 0
    for epoch in range(1, config.epochs + 1):
        frozen = frozen_blocks(model, epoch, config)
        set_training_mode(model, frozen)
        started, losses, outside = time.perf_counter(), [], []
        order = data.train_rows[torch.randperm(len(data.train_rows), generator=generator).numpy()]
        for start in tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch}/{config.epochs}",
                          disable=not (config.progress and sys.stderr.isatty()), leave=False):
            batch, targets, masks = augmented_batch(data, order[start:start + config.batch_size], config,
                                                    image_size=image_size, permutation=permutation, generator=generator)
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, total_steps, warmup_steps, config.learning_rate)
            loss, penalty = train_step(model, optimizer, batch.to(device), targets.to(device),
                                       masks=None if masks is None else masks.to(device), weights=weights, config=config,
                                       teacher=teacher)
            losses.append(loss)
            if penalty is not None:
                outside.append(penalty)
            if averaged is not None:
                averaged.update_parameters(model)
            step += 1
        recalibrate_batch_norm(evaluated, recalibration_batches, frozen_blocks(evaluated, epoch, config))
        metrics = {name: estimate_metrics(evaluated, *held_out, output_size=image_size, batch_size=config.batch_size)
                   for name, held_out in data.validation.items()}
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": time.perf_counter() - started,
                  **({"train_evidence_outside": float(np.mean(outside))} if outside else {}),
                  **{f"{name.replace('validation', 'val')}_{k}": v for name, values in metrics.items() for k, v in values.items()}}
        history.append(record)
        if best is None or selection_score(metrics) > selection_score(best):
            best, best_epoch, best_state = metrics, epoch, copy.deepcopy(evaluated.state_dict())
        if config.progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch" and not k.endswith("spiral_n"))
            tqdm.write(f"epoch {epoch}/{config.epochs}: {shown}")
    model.load_state_dict(best_state)
    return history, best_epoch
