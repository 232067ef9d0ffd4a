"""The prediction engine that every front end uses: images in, one morphology row per image out.

Images are decoded in worker processes while the model works on the previous batch; results stream
out batch by batch, so memory stays flat however many inputs there are. An image that cannot be
read gets its reason in the `error` column and the job goes on.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from galaxymorph.catalog import CatalogRow
from galaxymorph.config import (BATCH_SIZE, CHANNELS, CHUNK_ROWS, CONFIDENT_MARGIN, CONFIDENT_MAX_STD,
                                CONFIDENT_MIN_GALAXY, DEFAULT_MODEL, LABEL_MIN_GALAXY, MAX_PIXELS, MIN_IMAGE_SIZE,
                                default_workers)
from galaxymorph.errors import CatalogError, ModelError
from galaxymorph.labels import (BINARY_CLASSES, calibrated_spiral_share, galaxy_probability, has_spiral_semantics,
                                mirror_permutation, spiral_probability, with_even_classes)
from galaxymorph.models import LoadedModel, load_model
from galaxymorph.models.export import onnx_bytes
from galaxymorph.outputs.catalog_writer import check_output_path, open_catalog_writer
from galaxymorph.preprocess.parallel import DecodedBatch, decode_in_batches
from galaxymorph.sources import iter_inputs
from galaxymorph.typicality import FeatureDensity

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "cuda", "onnx", "onnx-int8", "torch")
HEADS = ("morphology", "embedding")


@dataclass(frozen=True)
class PredictOptions:
    """How prediction runs: batch size, decoding processes, inference back-end and threads,
    test-time augmentation (`tta`: average over the 8 rotations and mirror images of each input),
    and the largest image read (`max_pixels`; larger ones get an error row from their header).
    `workers` None means one decoding process per core (`config.default_workers`). `head` says what
    each row holds: the morphology columns, or the image's `embedding` (`Classifier.embeddings`).
    `batched_framing`: the decoding processes only decode JPEGs, and their framing and resampling
    run in batches on the back-end's device (`preprocess.batched`; on the CPU the same inputs within 6e-8);
    None means with the cuda back-end only."""

    batch_size: int = BATCH_SIZE
    workers: int | None = None
    backend: str = "auto"
    threads: int | None = None
    tta: bool = False
    progress: bool = False
    max_pixels: int = MAX_PIXELS
    head: str = "morphology"
    batched_framing: bool | None = None

    def inference_threads(self) -> int | None:
        """`threads`, else one thread when decoding processes take every core (more would only
        fight them for the cores), else the back-end's default."""
        if self.threads:
            return self.threads
        return 1 if self.workers >= default_workers() else None

    def __post_init__(self) -> None:
        object.__setattr__(self, "workers", default_workers(self.workers))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.max_pixels < MIN_IMAGE_SIZE ** 2:
            raise ValueError(f"max_pixels must be at least {MIN_IMAGE_SIZE ** 2}, got {self.max_pixels}")


@dataclass
class Scores:
    """What the model says of N inputs: class probabilities (N, K), the spread of p_spiral over the
    ensemble's members and test-time views (N,; NaN for one model without TTA), and how unlike the
    training images each input is (N,; `typicality.FeatureDensity.score`, NaN for a model without
    a fitted density)."""

    probabilities: np.ndarray
    spread: np.ndarray
    ood: np.ndarray

    @classmethod
    def missing(cls, count: int, class_count: int) -> Scores:
        """NaN scores, for inputs that could not be classified."""
        return cls(np.full((count, class_count), np.nan), np.full(count, np.nan), np.full(count, np.nan))

    def __getitem__(self, index) -> Scores:
        return Scores(self.probabilities[index], self.spread[index], self.ood[index])

    def __setitem__(self, index, other: Scores) -> None:
        self.probabilities[index], self.spread[index], self.ood[index] = other.probabilities, other.spread, other.ood


class Classifier:
    """A loaded model behind an inference back-end: torch on a CUDA GPU when one is present (bf16
    autocast, channels-last, inputs staged through pinned memory; framing on the GPU too, with
    `PredictOptions.batched_framing`), else ONNX Runtime on the CPU when installed (the model's int8
    graph when it has one), else torch on the CPU."""

    def __init__(self, loaded: LoadedModel, *, backend: str = "auto", threads: int | None = None,
                 tta: bool = False, features: bool = False) -> None:
        self.loaded = loaded
        self.classes = loaded.classes
        self.temperature = float(loaded.metadata.get("calibration", {}).get("temperature", 1.0))
        self.spiral_share = calibrated_spiral_share(loaded.metadata)
        self.density = FeatureDensity.from_dict(loaded.metadata["typicality"]) if "typicality" in loaded.metadata else None
        self.tta = tta
        if not features:
            loaded.require_trained_head()
        self.backend = _resolve_backend(backend, loaded, features=features)
        if self.backend in ("onnx", "onnx-int8"):
            graph = loaded.int8_graph.read_bytes() if self.backend == "onnx-int8" else onnx_bytes(loaded)
            self._session = _onnx_session(graph, threads)
            self._session_has_features = "member_features" in {output.name for output in self._session.get_outputs()}
            if self.density is not None and not self._session_has_features:
                logging.getLogger(__name__).warning(
                    "the int8 graph of %s predates ood_score (no member_features output): ood_score is left empty "
                    "and confident ignores it; run `galaxymorph quantize` again", loaded.name)
                self.density = None
        elif self.backend == "cuda":
            self._gpu_model, self._staging = _cuda_model(loaded), {}
        self._torch_threads = threads if self.backend in ("cuda", "torch") else None  # cuda: the host-side copies

    def scores(self, images: np.ndarray | torch.Tensor) -> Scores:
        """`Scores` for model inputs (N, 3, S, S) in [0, 1] (an array, or a tensor on the back-end's
        device): probabilities, the spread of p_spiral over the ensemble's members and the test-time
        views, and the out-of-distribution score (averaged over the views)."""
        from galaxymorph.preprocess.augment import MIRRORED_VIEWS, SYMMETRY_VIEWS, symmetry_views

        views = SYMMETRY_VIEWS if self.tta else 1
        logits, features = self.member_outputs(symmetry_views(images) if self.tta else images)
        logits = logits / self.temperature
        combined = _to_probabilities(logits.mean(axis=1)).reshape(views, len(images), -1)
        samples = _to_probabilities(logits).reshape(views, len(images), logits.shape[1], -1)
        if self.tta:
            permutation = mirror_permutation(self.classes)
            combined[MIRRORED_VIEWS] = combined[MIRRORED_VIEWS][..., permutation]
            samples[MIRRORED_VIEWS] = samples[MIRRORED_VIEWS][..., permutation]
        spread = np.full(len(images), np.nan)
        if has_spiral_semantics(self.classes) and views * logits.shape[1] > 1:
            spread = spiral_probability(samples, self.classes).std(axis=(0, 2))
        ood = np.full(len(images), np.nan)
        if self.density is not None and features is not None:
            ood = self.density.score(features).reshape(views, len(images)).mean(axis=0)
        return Scores(combined.mean(axis=0), spread, ood)

    def probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, K) and the spread of p_spiral (N,) of `scores`."""
        scores = self.scores(images)
        return scores.probabilities, scores.spread

    def member_outputs(self, images: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (N, M, K) of the M members (M = 1 for a single model) and their features (N, M,
        D), as float64; features are None from an ONNX graph exported before it had them."""
        import torch

        with torch.inference_mode(), _torch_threads(self._torch_threads):
            if self.backend in ("onnx", "onnx-int8"):
                inputs = {"images": np.ascontiguousarray(images, dtype=np.float32)}
                wanted = ["member_logits"] + (["member_features"] if self._session_has_features else [])
                outputs = [output.astype(np.float64) for output in self._session.run(wanted, inputs)]
                return outputs[0], outputs[1] if len(outputs) > 1 else None
            if self.backend == "cuda":
                logits, features = self._cuda_outputs(images)
            else:
                logits, features = self.loaded.model.member_outputs(torch.from_numpy(images))
            return logits.double().numpy(), features.double().numpy()

    def _cuda_outputs(self, images: np.ndarray | torch.Tensor):
        """Member logits and features, as float32 on the CPU, of a batch on the GPU or copied there."""
        import torch

        on_gpu = images if isinstance(images, torch.Tensor) else self._on_gpu(np.asarray(images, dtype=np.float32), "inputs")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, features = self._gpu_model.member_outputs(on_gpu.contiguous(memory_format=torch.channels_last))
        return logits.float().cpu(), features.float().cpu()  # waits for the GPU, so the pinned buffers are free again

    def _on_gpu(self, array: np.ndarray, slot: str) -> torch.Tensor:
        """The array copied to the GPU through this classifier's pinned buffer `slot` (grown as
        needed) without blocking: the buffer is free again once the GPU has caught up."""
        import torch

        source = torch.from_numpy(np.ascontiguousarray(array))
        staging = self._staging.get(slot)
        if staging is None or staging.numel() < source.numel() or staging.dtype != source.dtype:
            staging = self._staging[slot] = torch.empty(source.numel(), dtype=source.dtype).pin_memory()
        staged = staging[:source.numel()].view(source.shape)
        staged.copy_(source)
        return staged.to("cuda", non_blocking=True)

    def classify_rows(self, rows: Iterable[CatalogRow], *, options: PredictOptions = PredictOptions()) -> Iterator[list[dict]]:
        """Output rows for input rows, batch by batch, decoding in `options.workers` processes."""
        preprocessing = self.loaded.preprocessing
        batched = options.batched_framing if options.batched_framing is not None else self.backend == "cuda"
        for decoded in decode_in_batches(rows, preprocessing, file_of=lambda row: None if row.error else row.file,
                                         batch_size=options.batch_size, workers=options.workers,
                                         max_pixels=options.max_pixels, raw=batched):
            yield self.embedding_rows(decoded) if options.head == "embedding" else self.rows(decoded)

    def model_inputs(self, decoded: DecodedBatch[CatalogRow]) -> np.ndarray | torch.Tensor:
        """The batch's model inputs: its raw JPEG pixels (`DecodedBatch.raw`) framed in batches of
        one size by `preprocess.batched` on the back-end's device, the rest as decoded; a tensor on
        the GPU with the cuda back-end, else `decoded.images` with the framed inputs written into
        it. Fills in the framed items' galaxy flags."""
        raw = decoded.raw
        if raw is None or not raw.used:
            return decoded.images
        import torch

        from galaxymorph.preprocess.batched import frame_batch

        device = "cuda" if self.backend == "cuda" else "cpu"
        with torch.inference_mode(), _torch_threads(self._torch_threads):
            if device == "cuda":
                images, packed = self._on_gpu(decoded.images, "inputs"), self._on_gpu(raw.buffer[:raw.used], "raw")
            else:
                images, packed = torch.from_numpy(decoded.images), torch.from_numpy(raw.buffer[:raw.used])
            sizes: dict[tuple[int, int], list[int]] = {}
            for i, shape in enumerate(raw.shapes):
                if shape is not None:
                    sizes.setdefault(shape, []).append(i)
            for (height, width), members in sizes.items():
                span = height * width * CHANNELS
                first = raw.offsets[members[0]]
                if all(raw.offsets[i] == first + k * span for k, i in enumerate(members)):  # packed in a row: a view
                    pixels = packed[first:first + len(members) * span]
                else:
                    pixels = torch.stack([packed[raw.offsets[i]:raw.offsets[i] + span] for i in members])
                framed = frame_batch(pixels.reshape(-1, height, width, CHANNELS), self.loaded.preprocessing)
                images[torch.tensor(members, device=device)] = framed.inputs
                if framed.galaxy_found is not None:
                    for i, found, truncated in zip(members, framed.galaxy_found.tolist(), framed.galaxy_truncated.tolist()):
                        decoded.galaxy_found[i], decoded.galaxy_truncated[i] = found, truncated
            if device == "cuda":
                torch.cuda.current_stream().synchronize()  # the pinned buffers are free for the next batch
        return images if device == "cuda" else decoded.images

    def rows(self, decoded: DecodedBatch[CatalogRow]) -> list[dict]:
        """One output row per item; failed items keep their reason and empty probabilities."""
        good = self.decoded_well(decoded)
        scores = Scores.missing(len(decoded.items), len(self.classes))
        if good.any():
            scores[good] = self.scores(_selected(self.model_inputs(decoded), good))
        return self.build_rows(decoded, scores)

    def embeddings(self, images: np.ndarray) -> np.ndarray:
        """Unit vectors (N, D) float32 that place similar galaxies close together: the members'
        pooled features, averaged over the members and over the 8 rotations and mirror images of
        each input (so a turned or mirrored galaxy has the same embedding), then normalised."""
        from galaxymorph.preprocess.augment import SYMMETRY_VIEWS, symmetry_views

        _, features = self.member_outputs(symmetry_views(images))
        if features is None:
            raise ModelError(f"the {self.backend} graph of {self.loaded.name} gives no features (it predates them); "
                             "run `galaxymorph quantize` again or use --backend onnx")
        mean = features.reshape(SYMMETRY_VIEWS, len(images), *features.shape[1:]).mean(axis=(0, 2))
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def embedding_rows(self, decoded: DecodedBatch[CatalogRow]) -> list[dict]:
        """One row per item: the input's columns, id, file (absolute, so that the index can be
        searched from anywhere), `embedding` (NaN where the image failed) and error."""
        good = self.decoded_well(decoded)
        vectors = np.full((len(decoded.items), self.embedding_size), np.nan, dtype=np.float32)
        if good.any():
            vectors[good] = self.embeddings(_selected(self.model_inputs(decoded), good))
        return [{**_input_columns(item, {"embedding", "error"}), "id": item.id,
                 "file": str(item.file.absolute()) if isinstance(item.file, Path) else str(item.file or ""),
                 "embedding": vector, "error": error}
                for item, error, vector in zip(decoded.items, _reasons(decoded), vectors)]

    @cached_property
    def embedding_size(self) -> int:
        """The length of `embeddings`' vectors."""
        size = self.loaded.preprocessing.image_size
        return self.embeddings(np.zeros((1, CHANNELS, size, size), dtype=np.float32)).shape[1]

    @staticmethod
    def decoded_well(decoded: DecodedBatch[CatalogRow]) -> np.ndarray:
        """Which items have an image to classify (no reading or upstream error)."""
        return np.array([not error for error in _reasons(decoded)], dtype=bool)

    def build_rows(self, decoded: DecodedBatch[CatalogRow], scores: Scores) -> list[dict]:
        """The output rows of `rows` from scores computed elsewhere (NaN for failed items), as the
        web service's batched inference does. The columns are described in README.md ("Columns")."""
        items = decoded.items
        errors = _reasons(decoded)
        spiral = has_spiral_semantics(self.classes)
        nothing = np.full(len(items), np.nan)
        p_spiral = spiral_probability(scores.probabilities, self.classes) if spiral else nothing
        p_galaxy = galaxy_probability(scores.probabilities, self.classes) if spiral else nothing
        confident = self.confident(p_spiral, p_galaxy, scores)
        ours = (set(OUTPUT_COLUMNS) - {"id", "file"}) | {f"p_{c}" for c in self.classes}
        rows = []
        for i, (item, error) in enumerate(zip(items, errors)):
            row = {**_input_columns(item, ours), "id": item.id, "file": str(item.file or ""), "label": "", "p_spiral": float(p_spiral[i]),
                   "p_spiral_std": float(scores.spread[i]), "p_galaxy": float(p_galaxy[i]),
                   "ood_score": float(scores.ood[i]), "confident": bool(confident[i])}
            if not error:
                predicted = self.classes[int(np.argmax(scores.probabilities[i]))]
                row["label"] = _binary_label(p_spiral[i], p_galaxy[i]) if spiral else predicted
            if self.classes != BINARY_CLASSES:
                row["class"] = "" if error else predicted
                row.update({f"p_{name}": float(p) for name, p in zip(self.classes, scores.probabilities[i])})
            if self.loaded.preprocessing.framing:
                row["galaxy_found"] = bool(decoded.galaxy_found[i])
                row["galaxy_truncated"] = bool(decoded.galaxy_truncated[i])
            row["error"] = error
            rows.append(row)
        return rows

    def confident(self, p_spiral: np.ndarray, p_galaxy: np.ndarray, scores: Scores) -> np.ndarray:
        """p_spiral far from 0.5, also as it would be for an even class mix (`config.CONFIDENT_MARGIN`),
        the members and views agreeing (where measured), the model's mass on elliptical or disk
        classes, and the input like the training images (where measured)."""
        limit = self.density.limit if self.density is not None and self.density.limit is not None else np.inf
        even = p_spiral if self.spiral_share is None else with_even_classes(p_spiral, self.spiral_share)
        return ((np.abs(p_spiral - 0.5) >= CONFIDENT_MARGIN) & (np.abs(even - 0.5) >= CONFIDENT_MARGIN)
                & ~(scores.spread > CONFIDENT_MAX_STD)
                & (p_galaxy >= CONFIDENT_MIN_GALAXY) & ~(scores.ood > limit))


OUTPUT_COLUMNS = ("id", "file", "label", "p_spiral", "p_spiral_std", "p_galaxy", "ood_score", "confident", "class",
                  "galaxy_found", "galaxy_truncated", "error")
"""The columns a catalog row has besides the input's own and the class probabilities `p_CLASS`."""


def _selected(images: np.ndarray | torch.Tensor, chosen: np.ndarray) -> np.ndarray | torch.Tensor:
    """The images (array or tensor) where the boolean `chosen` is true."""
    if isinstance(images, np.ndarray):
        return images[chosen]
    import torch

    return images[torch.from_numpy(chosen).to(images.device)]


def _binary_label(p_spiral: float, p_galaxy: float) -> str:
    """spiral or elliptical by p_spiral, where the model puts at least `LABEL_MIN_GALAXY` of its
    probability on those classes; else uncertain."""
    if not p_galaxy >= LABEL_MIN_GALAXY:  # NaN too
        return "uncertain"
    return "spiral" if p_spiral >= 0.5 else "elliptical"


def predict(inputs: Iterable[str | os.PathLike | CatalogRow], model: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
            *, options: PredictOptions = PredictOptions()) -> Iterator[list[dict]]:
    """Classify images batch by batch; yields lists of row dicts in input order.

    `inputs` are image files, folders, catalogs, HDF5 arrays, tar shards, or `CatalogRow`s; `model`
    a bundled model name, a checkpoint path or an already loaded model.
    """
    yield from _classifier(load_model(model), options).classify_rows(_as_rows(inputs), options=options)


def _classifier(loaded: LoadedModel, options: PredictOptions) -> Classifier:
    return Classifier(loaded, backend=options.backend, threads=options.inference_threads(), tta=options.tta,
                      features=options.head == "embedding")


@dataclass(frozen=True)
class ClassifySummary:
    """Where the catalog went, its rows (with those of an earlier run that this one resumed), how
    many failed in this run, how many rows an earlier run had already done, and the errors of
    inputs given by path that failed as a whole (a missing file, an unreadable catalog)."""

    output: Path
    rows: int
    failed: int
    resumed_after: int = 0
    input_errors: list[str] = field(default_factory=list)


def classify(inputs: Iterable[str | os.PathLike | CatalogRow] | Callable[[int], Iterable[CatalogRow]],
             output: str | os.PathLike, *, model: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
             options: PredictOptions = PredictOptions(), resume: bool = False, chunk_rows: int = CHUNK_ROWS,
             total: int | None = None, source: dict | None = None) -> ClassifySummary:
    """Classify images and write the morphology catalog as results arrive: a .csv, .parquet, .fits or
    .ecsv file, or a folder of Parquet chunks of `chunk_rows` rows that a killed run `resume`s (the
    inputs must come in the same order: the rows the folder holds are skipped). `inputs` may also be
    a function that gives the rows after the first N, for inputs that can skip rows without work
    (cutouts still to be fetched); `total`, the number of rows when known, gives the progress bar
    its end (counted here for a list of paths). A dataset folder records the model's name and weights
    and `source`, what the inputs are beyond their names (`Cutouts.what_is_asked` for fetched
    positions), and a resumed run with others is refused. The catalog records its provenance. No input at all
    is a `CatalogError`, and leaves no empty catalog behind."""
    from tqdm import tqdm

    from galaxymorph.outputs.metadata import provenance
    from galaxymorph.sources import count_inputs

    output = check_output_path(output)
    loaded = load_model(model)
    classifier = _classifier(loaded, options)  # before the output is opened: an encoder is refused here
    settings = {"model": loaded.name, "weights_sha256": loaded.weights_sha256, "classes": list(loaded.classes),
                "tta": options.tta, "head": options.head, **({"source": source} if source else {})}
    failed, input_errors = 0, []
    listed = isinstance(inputs, (list, tuple))  # never consume an iterator
    given = {str(Path(item)) for item in inputs if not isinstance(item, CatalogRow)} if listed else set()
    show_progress = options.progress and sys.stderr.isatty()
    if total is None and show_progress and listed and not any(isinstance(item, CatalogRow) for item in inputs):
        total = count_inputs(inputs)
    stamp = provenance(loaded, tta=options.tta, backend=classifier.backend)
    with open_catalog_writer(output, resume=resume, chunk_rows=chunk_rows, settings=settings, provenance=stamp) as writer, \
            tqdm(desc="classify", unit="img", total=total, initial=writer.rows_done, disable=not show_progress) as bar:
        done = writer.rows_done
        remaining = inputs(done) if callable(inputs) else islice(_as_rows(inputs), done, None)
        for rows in classifier.classify_rows(_as_rows(remaining), options=options):
            writer.write(rows)
            failed += sum(1 for row in rows if row["error"])
            input_errors += [row["error"] for row in rows if row["error"] and row["file"] in given]
            bar.update(len(rows))
    if done + writer.rows_written == 0:
        if output.is_file():
            output.unlink()
        raise CatalogError("no image found in the inputs (empty folders or catalogs, or no file with an image suffix)")
    return ClassifySummary(output, done + writer.rows_written, failed, done, input_errors)


def embed(inputs: Iterable[str | os.PathLike | CatalogRow] | Callable[[int], Iterable[CatalogRow]],
          output: str | os.PathLike, *, model: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
          options: PredictOptions = PredictOptions(), resume: bool = False, chunk_rows: int = CHUNK_ROWS,
          source: dict | None = None) -> ClassifySummary:
    """`classify` with the embedding head: one row per image with the input's columns, `id`, `file`,
    `embedding` (`Classifier.embeddings`) and `error`, into a .parquet file or a dataset folder (the
    index that `similarity` searches), with the model's name and preprocessing in its metadata."""
    if Path(output).suffix.lower() not in ("", ".parquet", ".pq"):
        raise ValueError(f"embeddings are written to a .parquet file or a dataset folder, not {Path(output).name!r}")
    return classify(inputs, output, model=model, options=replace(options, head="embedding"), resume=resume,
                    chunk_rows=chunk_rows, source=source)


def _gives_features(graph: Path) -> bool:
    """Whether an ONNX graph has the `member_features` output (graphs quantised before it had none)."""
    import onnx

    return "member_features" in {output.name for output in onnx.load(str(graph), load_external_data=False).graph.output}


def _input_columns(item: CatalogRow, ours: set[str]) -> dict:
    """The input's own columns, which come first in a row; one named like an output column (`ours`)
    is kept as input_NAME. A catalog's id and file columns are the row's own id and file."""
    return {(f"input_{name}" if name in ours else name): value for name, value in item.columns.items()}


def _to_probabilities(logits: np.ndarray) -> np.ndarray:
    """Class probabilities (..., K) from logits (..., K), or (..., 1) for one sigmoid logit."""
    import torch

    from galaxymorph.models import logits_to_probabilities

    flat = torch.from_numpy(logits.reshape(-1, logits.shape[-1]))
    probabilities = logits_to_probabilities(flat).numpy()
    return probabilities.reshape(*logits.shape[:-1], probabilities.shape[-1])


def _reasons(decoded: DecodedBatch[CatalogRow]) -> list[str]:
    """Each item's failure: its upstream error (an unreadable catalog row, a failed download), else
    its decoding error, '' when fine."""
    return [item.error or error for item, error in zip(decoded.items, decoded.errors)]


def _as_rows(inputs: Iterable[str | os.PathLike | CatalogRow]) -> Iterator[CatalogRow]:
    for item in inputs:
        if isinstance(item, CatalogRow):
            yield item
        else:
            yield from iter_inputs([item])


def _resolve_backend(backend: str, loaded: LoadedModel, *, features: bool = False) -> str:
    """'auto' means CUDA when torch sees a GPU, else ONNX Runtime when it and the exporter's onnx
    package are installed (the int8 graph when the model has one, and, where `features` are needed,
    when that graph gives them), else torch on the CPU."""
    import torch

    if backend == "cuda" and not torch.cuda.is_available():
        raise ModelError("backend 'cuda' asked for, but torch sees no CUDA GPU")
    if backend == "onnx-int8" and loaded.int8_graph is None:
        raise ModelError(f"model {loaded.name} has no int8 graph; make one with `galaxymorph quantize CHECKPOINT LABELS`")
    if backend == "auto":
        if torch.cuda.is_available():
            return "cuda"
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            return "torch"
        if loaded.int8_graph is None or (features and not _gives_features(loaded.int8_graph)):
            return "onnx"
        return "onnx-int8"
    return backend


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run torch on `threads` threads inside the block only (None: as it is). torch's setting is
    process-wide, so it is put back for the caller's own work; classifiers that ask for different
    counts should not run torch at once in threads of one process."""
    import torch

    before = torch.get_num_threads()
    changed = bool(threads) and threads != before
    if changed:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if changed:
            torch.set_num_threads(before)


def _cuda_model(loaded: LoadedModel):
    """A copy of the model on the GPU in channels-last layout (the loaded model stays on the CPU)."""
    import copy

    import torch

    return copy.deepcopy(loaded.model).eval().to("cuda", memory_format=torch.channels_last)


def _onnx_session(graph: bytes, threads: int | None):
    """Open an ONNX Runtime session on an ONNX graph held in memory."""
    import onnxruntime

    settings = onnxruntime.SessionOptions()
    if threads:
        settings.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(graph, settings, providers=["CPUExecutionProvider"])
