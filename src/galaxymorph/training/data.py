"""Training data: class schemes, the seeded split, and the decoded image cache."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from galaxymorph.catalog import LabelledCatalog
from galaxymorph.config import Preprocessing, cache_dir
from galaxymorph.errors import CatalogError
from galaxymorph.labels import BINARY_CLASSES, GZ1_CLASSES, binary_label
from galaxymorph.preprocess.framing import central_segment
from galaxymorph.preprocess.parallel import decode_in_batches

CLASS_SCHEMES = ("binary", "gz1", "labels")
DECODED_CACHE_VERSION = 7
"""Bump when decoding changes, so that cached training sets are decoded again."""
AUGMENTATION_MARGIN = 1.5
"""Training images are decoded this much wider than the model input, so rotations have no corners."""


def choose_classes(labels: Sequence[str], scheme: str) -> tuple[tuple[str, ...], list[int | None]]:
    """Classes for a class scheme and each label's class index (None: not in the scheme).

    `binary` maps every label to elliptical/spiral (mergers and unknowns left out); `gz1` keeps the
    Galaxy Zoo 1 classes; `labels` uses the labels as they are, sorted.
    """
    if scheme == "binary":
        classes = BINARY_CLASSES
        mapped = [binary_label(label) for label in labels]
    elif scheme == "gz1":
        classes = GZ1_CLASSES
        mapped = [label if label in GZ1_CLASSES else None for label in labels]
    elif scheme == "labels":
        classes = tuple(sorted(set(labels)))
        mapped = list(labels)
    else:
        raise ValueError(f"scheme must be one of {CLASS_SCHEMES}, got {scheme!r}")
    present = {label for label in mapped if label is not None}
    if len(present) < 2:
        raise CatalogError(f"the {scheme!r} class scheme finds fewer than two classes in these labels "
                           f"({sorted(set(labels))[:10]}); use the 'labels' scheme for other label sets")
    index = {name: i for i, name in enumerate(classes)}
    return classes, [index.get(label) if label is not None else None for label in mapped]


def stratified_split(labels: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, list[int]]:
    """Seeded train/val/test split of row indices, stratified by label."""
    rng = np.random.default_rng(seed)
    split = {"train": [], "val": [], "test": []}
    labels = np.asarray(labels)
    for label in sorted(set(labels.tolist())):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(fractions[1] * len(members)))
        n_test = int(round(fractions[2] * len(members)))
        split["test"] += members[:n_test].tolist()
        split["val"] += members[n_test:n_test + n_val].tolist()
        split["train"] += members[n_test + n_val:].tolist()
    return {name: sorted(indices) for name, indices in split.items()}


def training_preprocessing(preprocessing: Preprocessing) -> Preprocessing:
    """The wider view that augmentation crops the model input from."""
    return replace(preprocessing,
                   image_size=int(round(preprocessing.image_size * AUGMENTATION_MARGIN)),
                   crop_fraction=min(1.0, preprocessing.crop_fraction * AUGMENTATION_MARGIN),
                   frame_fill=preprocessing.frame_fill / AUGMENTATION_MARGIN)


def decode_catalog(catalog: LabelledCatalog, preprocessing: Preprocessing, *, workers: int,
                   use_cache: bool = True) -> tuple[np.ndarray, list[str]]:
    """All images of a catalog as uint8 (N, 3, S, S), cached on disk by content of the request."""
    request = [DECODED_CACHE_VERSION, [str(f) for f in catalog.files], preprocessing.to_dict()]
    key = hashlib.sha1(json.dumps(request).encode()).hexdigest()
    cached = cache_dir() / f"decoded-{key[:16]}.npz"
    if use_cache and cached.is_file():
        with np.load(cached) as stored:
            return stored["images"], stored["errors"].tolist()
    images, errors = [], []
    for batch in decode_in_batches(catalog.files, preprocessing, file_of=Path, batch_size=64, workers=workers):
        images.append(np.round(batch.images * 255).astype(np.uint8))
        errors += batch.errors
    images = np.concatenate(images)
    if use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.partial.npz")  # one per process: runs started together
        np.savez(partial, images=images, errors=np.array(errors))
        partial.replace(cached)
    return images, errors


def galaxy_masks(images: np.ndarray, output_size: int) -> np.ndarray:
    """The central galaxy's pixels in training images (N, 3, S, S) uint8, as uint8 masks (N, S, S)
    of 0 and 255 that augmentation can resample like the images.

    The galaxy is segmented (`central_segment`) in the central `output_size` px, which is the model
    input when not augmented; an image without a central source gets a mask of ones everywhere.
    """
    size = images.shape[-1]
    start = (size - output_size) // 2
    inner = slice(start, start + output_size)
    masks = np.zeros((len(images), size, size), dtype=np.uint8)
    for mask, image in zip(masks, images):
        segment = central_segment(image[:, inner, inner].mean(axis=0) / 255.0)
        if segment is None:
            mask[:] = 255
        else:
            mask[inner, inner] = segment * 255
    return masks
