"""Self-supervised pre-training: an encoder learnt from unlabelled images (SimCLR, Chen et al. 2020).

Two random views of each galaxy (any rotation, a mirror image, a zoom from the whole training view
down to a tight, upsampled centre in which the galaxy overflows the frame, and `survey_augment`'s
blur, colour stretch, noise and JPEG) are pulled together in a projection space and pushed away
from the other galaxies of the batch (the NT-Xent loss). The encoder is the architecture's feature
blocks; its checkpoint is a model of that architecture whose output layer was never trained
(`encoder_only` in its metadata), for `train --from` (fine-tuning) and `embed` (search), not for
`classify`.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from galaxymorph.config import SPLIT_SEED, Preprocessing, default_workers
from galaxymorph.errors import CatalogError
from galaxymorph.labels import BINARY_CLASSES
from galaxymorph.models import GalaxyClassifier, create_model, save_checkpoint
from galaxymorph.preprocess.augment import SurveyAugmentation, survey_augment, symmetry_augment
from galaxymorph.sources import iter_inputs
from galaxymorph.training.data import decode_files, training_preprocessing
from galaxymorph.training.train import (RECALIBRATION_IMAGES, centre_batches, get_lr, recalibrate_batch_norm,
                                        training_device)


@dataclass
class PretrainConfig:
    """Everything a pre-training run depends on; saved in the checkpoint's metadata."""

    inputs: list[Path]
    """Image files, folders and catalogs (as `classify` reads them); no labels are used."""
    output: Path
    architecture: str = "galaxynet"
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    temperature: float = 0.2
    """Of the NT-Xent loss: lower weighs the hardest negatives more."""
    projection_size: int = 64
    zoom_range: tuple[float, float] = (0.67, 2.5)
    """Zoom of each view against the model input: 0.67 shows the whole training view, 2.5 its
    central 40%, upsampled (the galaxy then fills or overflows the frame)."""
    survey_augmentation: SurveyAugmentation = field(default_factory=SurveyAugmentation)
    seed: int = SPLIT_SEED
    workers: int | None = None
    device: str | None = None
    """Where the encoder trains (None: a GPU when there is one); augmentation stays on the CPU."""
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    progress: bool = True
    use_cache: bool = True

    def __post_init__(self) -> None:
        self.workers = default_workers(self.workers)
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"pre-training needs at least 1 epoch and 2 galaxies a batch, got {self.epochs} and {self.batch_size}")
        if not 0.0 < self.zoom_range[0] <= self.zoom_range[1]:
            raise ValueError(f"zoom_range must be a positive range, got {self.zoom_range}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


def projection_head(features: int, output: int) -> nn.Sequential:
    """The MLP between the encoder's pooled features and the contrastive loss (dropped afterwards)."""
    return nn.Sequential(nn.Linear(features, features), nn.BatchNorm1d(features), nn.ReLU(inplace=True),
                         nn.Linear(features, output))


def contrastive_loss(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent: each view's partner is the positive among the 2N - 1 other views of the batch."""
    projected = F.normalize(torch.cat([first, second]), dim=1)
    similarity = projected @ projected.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    count = first.shape[0]
    partners = torch.cat([torch.arange(count, 2 * count), torch.arange(count)])
    return F.cross_entropy(similarity, partners)


def random_view(images: torch.Tensor, generator: torch.Generator, config: PretrainConfig) -> torch.Tensor:
    """One augmented view (N, 3, S, S) in [0, 1] of uint8 training views (N, 3, S', S')."""
    unused_targets = torch.zeros(images.shape[0], dtype=torch.long)
    view, _ = symmetry_augment(images, unused_targets, output_size=config.preprocessing.image_size,
                               mirror_permutation=np.zeros(1, dtype=np.int64), generator=generator,
                               zoom_range=config.zoom_range)
    return survey_augment(view, generator, config.survey_augmentation)


def pretraining_images(config: PretrainConfig) -> np.ndarray:
    """The inputs' training views, uint8 (N, 3, S', S'); unreadable ones are left out with a warning."""
    files = [row.file for row in iter_inputs(config.inputs) if not row.error and row.file is not None]
    if not files:
        raise CatalogError(f"no readable images among {[str(path) for path in config.inputs]}")
    images, errors = decode_files(files, training_preprocessing(config.preprocessing), workers=config.workers,
                                  use_cache=config.use_cache)
    failed = [error for error in errors if error]
    if failed:
        warnings.warn(f"{len(failed)} unreadable images left out of pre-training, e.g. {failed[0]}", stacklevel=3)
    good = np.array([not error for error in errors])
    if good.sum() < 2:
        raise CatalogError("pre-training needs at least two readable images")
    return images[good]


def pretrain(config: PretrainConfig) -> Path:
    """Train an encoder without labels; writes its checkpoint after each epoch (the last one kept)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = training_device(config.device)
    images = pretraining_images(config)
    sample = np.sort(np.random.default_rng(config.seed).permutation(len(images))[:RECALIBRATION_IMAGES])
    recalibration_batches = centre_batches(images, sample, config.preprocessing.image_size, config.batch_size)
    model = create_model(config.architecture, classes=BINARY_CLASSES)
    head = projection_head(model.output_layer().in_features, config.projection_size)
    model.to(device)
    head.to(device)
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    batch_size = min(config.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size
    total_steps, warmup_steps = steps_per_epoch * config.epochs, int(config.warmup_epochs * steps_per_epoch)
    history, step, weights = [], 0, None
    for epoch in range(1, config.epochs + 1):
        model.train()
        head.train()
        started, losses = time.perf_counter(), []
        order = torch.randperm(len(images), generator=generator).numpy()
        for start in tqdm(range(0, steps_per_epoch * batch_size, batch_size), desc=f"epoch {epoch}/{config.epochs}",
                          disable=not (config.progress and sys.stderr.isatty()), leave=False):
            batch = torch.from_numpy(images[order[start:start + batch_size]])
            first, second = (random_view(batch, generator, config).to(device) for _ in range(2))
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, total_steps, warmup_steps, config.learning_rate)
            loss = contrastive_loss(*(head(_pooled(model, view)) for view in (first, second)), config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": time.perf_counter() - started})
        if config.progress:
            tqdm.write(f"epoch {epoch}/{config.epochs}: contrastive loss {history[-1]['train_loss']:.4f}, "
                       f"{history[-1]['seconds']:.0f} s")
        weights = _save_encoder(model, recalibration_batches, config, history, images=len(images), device=device)
    return weights


def _pooled(model: GalaxyClassifier, images: torch.Tensor) -> torch.Tensor:
    return model.forward_features(images).mean(dim=(2, 3))


def _save_encoder(model: GalaxyClassifier, recalibration_batches: list[torch.Tensor], config: PretrainConfig,
                  history: list[dict], *, images: int, device: torch.device) -> Path:
    """The encoder as a checkpoint, its batch-norm statistics those of `recalibration_batches` (a
    sample of its `images`, un-augmented)."""
    saved = copy.deepcopy(model).cpu()
    recalibrate_batch_norm(saved, recalibration_batches, [])
    record = {key: value for key, value in asdict(config).items()
              if key not in ("output", "architecture", "preprocessing", "workers", "device", "progress", "use_cache")}
    record.update(inputs=[str(path) for path in config.inputs], images=images, device=device.type, objective="SimCLR (NT-Xent)",
                  optimizer="AdamW", schedule="linear warm-up, cosine decay", history=history)
    return save_checkpoint(saved, config.output, architecture=config.architecture, preprocessing=config.preprocessing,
                           encoder_only=True, training=record)
