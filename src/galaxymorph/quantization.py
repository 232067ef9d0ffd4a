"""8-bit inference for CPUs: a checkpoint's ONNX graph with int8 weights and activations.

ONNX Runtime's static quantisation (QDQ format; weights int8 per output channel, activations uint8
with ranges measured once on training images) runs the convolutions on the CPU's integer units,
about twice as fast as float32 (BENCHMARKS.md). The graph is written beside the checkpoint as
`NAME.int8.onnx`, and the checkpoint's metadata records how far it moves the probabilities on the
validation split. `save_checkpoint` deletes it when new weights make it stale. The `onnx-int8`
back-end runs it, and `auto` picks it on a CPU wherever it exists.

    $ galaxymorph quantize runs/model.pt labels.csv        # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from galaxymorph.catalog import read_labelled_catalog
from galaxymorph.config import CALIBRATION_IMAGES, default_workers
from galaxymorph.errors import CatalogError
from galaxymorph.models import LoadedModel, load_checkpoint
from galaxymorph.models.checkpoint import int8_graph_path, record_in_metadata
from galaxymorph.models.export import onnx_bytes
from galaxymorph.prediction import Classifier
from galaxymorph.training.data import split_inputs


def quantized_graph(loaded: LoadedModel, calibration: np.ndarray, *, batch_size: int = 32) -> bytes:
    """The model's ONNX graph (`models.export.onnx_bytes`) quantised to int8, with activation ranges
    from `calibration`, model inputs (N, 3, S, S)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calibration.astype(np.float32), max(1, len(calibration) // batch_size)))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    with tempfile.TemporaryDirectory() as folder:
        exported, prepared, quantized = (Path(folder) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        exported.write_bytes(onnx_bytes(loaded))
        quant_pre_process(exported, prepared)
        quantize_static(prepared, quantized, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return quantized.read_bytes()


def quantize_checkpoint(checkpoint: str | os.PathLike, labels: str | os.PathLike, *,
                        images: int = CALIBRATION_IMAGES, workers: int | None = 0) -> dict:
    """Write `NAME.int8.onnx` beside a checkpoint, with ranges from the first `images` galaxies of
    its training split in `labels`, and record in its metadata how the int8 probabilities (and
    ood_score) differ from float32 ones on its validation split; returns that record and the
    graph's path (`graph`). `workers`: decoding processes (None: one per core)."""
    workers = default_workers(workers)
    loaded = load_checkpoint(checkpoint)
    loaded.require_trained_head()
    catalog = read_labelled_catalog(labels)
    calibration = split_inputs(catalog, loaded, "train", labels, limit=images, workers=workers)
    if not len(calibration):
        raise CatalogError(f"catalog {labels}: no readable image in model {loaded.name}'s training split")
    path = int8_graph_path(checkpoint)
    path.write_bytes(quantized_graph(loaded, calibration))
    validation = split_inputs(catalog, loaded, "val", labels, workers=workers)
    if not len(validation):
        raise CatalogError(f"catalog {labels}: no readable image in model {loaded.name}'s validation split to check {path.name} on")
    exact = Classifier(loaded, backend="onnx").scores(validation)
    quantized = Classifier(replace(loaded, int8_graph=path), backend="onnx-int8").scores(validation)
    difference = np.abs(quantized.probabilities - exact.probabilities)
    result = {"calibration_images": int(len(calibration)), "split": "val", "galaxies": int(len(validation)),
              "max_abs_difference": float(difference.max()), "mean_abs_difference": float(difference.mean()),
              "same_class": float((quantized.probabilities.argmax(axis=1) == exact.probabilities.argmax(axis=1)).mean())}
    if not np.isnan(exact.ood).all():  # ood_score, where the model has a feature density
        result["ood_score_max_relative_difference"] = float(np.max(np.abs(quantized.ood / exact.ood - 1)))
    record_in_metadata(checkpoint, "int8", result)
    return {**result, "graph": str(path)}


