"""Training data: class schemes, the seeded split, and the decoded image cache."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from galaxymorph.catalog import LabelledCatalog
from galaxymorph.config import MAX_PIXELS, Preprocessing, cache_dir
from galaxymorph.errors import CatalogError, ImageReadError
from galaxymorph.labels import BINARY_CLASSES, GZ1_CLASSES, binary_label
from galaxymorph.models import LoadedModel
from galaxymorph.preprocess.augment import TightCutouts, tight_cutout
from galaxymorph.preprocess.decode import ModelInput, decode_bytes
from galaxymorph.preprocess.framing import central_segment
from galaxymorph.preprocess.parallel import decode_in_batches, model_inputs

CLASS_SCHEMES = ("binary", "gz1", "labels")
DECODED_CACHE_VERSION = 8
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


def decode_files(files: Sequence[Path], preprocessing: Preprocessing, *, workers: int,
                 use_cache: bool = True) -> tuple[np.ndarray, list[str]]:
    """Images of files as uint8 (N, 3, S, S) and each one's error ("" if none), cached on disk by
    content of the request."""
    def decode() -> dict[str, np.ndarray]:
        images, errors = [], []
        for batch in decode_in_batches(files, preprocessing, file_of=Path, batch_size=64, workers=workers):
            images.append(np.round(batch.images * 255).astype(np.uint8))
            errors += batch.errors
        return {"images": np.concatenate(images), "errors": np.array(errors)}

    request = [[str(f) for f in files], preprocessing.to_dict()]
    stored = _cached("decoded", request, decode, use_cache)
    return stored["images"], stored["errors"].tolist()


def _cached(kind: str, request: list, compute: Callable[[], dict[str, np.ndarray]], use_cache: bool) -> dict[str, np.ndarray]:
    """Arrays that `compute` makes, cached on disk under a hash of `request` (and the cache version)."""
    key = hashlib.sha1(json.dumps([DECODED_CACHE_VERSION, *request]).encode()).hexdigest()
    cached = cache_dir() / f"{kind}-{key[:16]}.npz"
    if use_cache and cached.is_file():
        with np.load(cached) as stored:
            return dict(stored)
    arrays = compute()
    if use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.partial.npz")  # one per process: runs started together
        np.savez(partial, **arrays)
        partial.replace(cached)
    return arrays


@dataclass(frozen=True)
class TightView:
    """A tight, zoomed rendering of an image file (`tight_cutout`, seeded), decoded like any file."""

    file: Path
    seed: tuple[int, ...]
    settings: TightCutouts = TightCutouts()

    def model_input(self, preprocessing: Preprocessing, max_pixels: int = MAX_PIXELS) -> ModelInput:
        try:
            with Image.open(self.file) as image:
                data = tight_cutout(image.convert("RGB"), np.random.default_rng(self.seed), self.settings)
        except (OSError, ValueError) as error:  # FITS, 16-bit or corrupt files: no tight view, the file as it is
            raise ImageReadError(self.file, f"no tight view: {error}") from error
        return decode_bytes(data, str(self.file), preprocessing, max_pixels=max_pixels)


def decode_tight_views(files: Sequence[Path], preprocessing: Preprocessing, *, views: int, seed: int,
                       settings: TightCutouts = TightCutouts(), workers: int,
                       use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`views` tight renderings of each file as uint8 (N, views, 3, S', S'), S' the training size
    (`training_preprocessing`), and whether each decoded (N, views); cached like `decode_files`.

    Each rendering becomes the model input exactly as `classify` would make it from such a cutout,
    padded by reflection to the wider training view, so that the centre view is that input.
    """
    wider = training_preprocessing(preprocessing).image_size - preprocessing.image_size
    if wider % 2:  # the centre view would sit half a pixel off the input that classify makes
        raise ValueError(f"tight views need a training view wider than the input by an even number of px; "
                         f"image_size {preprocessing.image_size} gives {wider}")

    def decode() -> dict[str, np.ndarray]:
        rendered = [TightView(Path(file), (seed, row, view), settings) for row, file in enumerate(files) for view in range(views)]
        margin = (wider // 2, wider // 2)
        images, decoded = [], []
        for batch in decode_in_batches(rendered, preprocessing, file_of=lambda view: view, batch_size=64, workers=workers):
            padded = np.pad(batch.images, ((0, 0), (0, 0), margin, margin), mode="reflect")
            images.append(np.round(padded * 255).astype(np.uint8))
            decoded += [not error for error in batch.errors]
        images = np.concatenate(images)
        return {"images": images.reshape(len(files), views, *images.shape[1:]),
                "decoded": np.array(decoded, dtype=bool).reshape(len(files), views)}

    request = [[str(f) for f in files], preprocessing.to_dict(), views, seed, settings.to_dict()]
    stored = _cached("tight", request, decode, use_cache)
    return stored["images"], stored["decoded"]


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


def split_inputs(catalog: LabelledCatalog, loaded: LoadedModel, split: str, labels: object, *, limit: int | None = None,
                 workers: int = 0) -> np.ndarray:
    """Model inputs (N, 3, S, S) of the first `limit` readable galaxies of the model's saved `split` of a catalog."""
    files = [catalog.files[i] for i in rows_of_split(catalog.ids, loaded, split, labels)[:limit]]
    return model_inputs(files, loaded.preprocessing, workers)


def rows_of_split(ids: list[str], loaded: LoadedModel, split: str, labels: object) -> list[int]:
    """Indices of `ids` in the model's saved `split` ('all': every row); a `CatalogError` if none."""
    if split == "all":
        return list(range(len(ids)))
    saved = loaded.metadata.get("split", {}).get(split)
    if saved is None:
        raise CatalogError(f"model {loaded.name} has no saved {split!r} split; use split='all'")
    wanted = set(saved)
    rows = [i for i, row_id in enumerate(ids) if row_id in wanted]
    if not rows:
        raise CatalogError(f"catalog {labels}: none of its ids are in model {loaded.name}'s {split!r} split")
    return rows
