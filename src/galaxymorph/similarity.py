"""Find more like this: the nearest neighbours of a galaxy, and the least typical galaxies, among
the embeddings that `galaxymorph embed` writes.

An index is that Parquet file or dataset folder: one row per image with `id`, `file` and
`embedding`, a unit vector (rows whose image failed have NaN and are left out). The distance is the
cosine distance, 1 - a.b. Up to `EXACT_LIMIT` vectors are searched exactly; larger indexes go
through a FAISS HNSW graph (the optional `search` extra), built once and kept beside the
embeddings as NAME.hnsw.faiss, which is rebuilt when the embeddings change.

    >>> index = EmbeddingIndex.load("embeddings.parquet")                 # doctest: +SKIP
    >>> similar(index, ["587722952767439450"], k=10)                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from galaxymorph.errors import CatalogError, GalaxyMorphError
from galaxymorph.models import LoadedModel, load_model
from galaxymorph.prediction import Classifier
from galaxymorph.preprocess.decode import read_model_input

EXACT_LIMIT = 20_000
"""Indexes up to this many vectors are searched exactly; larger ones through the HNSW graph."""
HNSW_NEIGHBOURS, HNSW_BUILD_DEPTH, HNSW_SEARCH_DEPTH = 32, 80, 128
"""The HNSW graph's links per vector, and the candidate lists while building and searching
(benchmarks/similarity.py measures recall against exact search)."""
ODDITY_NEIGHBOURS = 10
BLOCK = 1024
"""Queries per block of the exact search (a block of distances to every vector is held at once)."""


@dataclass
class EmbeddingIndex:
    """The embeddings of an index, with the ids and files of their rows and the model that made them
    (its name and the SHA-256 of its weights, from the index's provenance)."""

    path: Path
    ids: list[str]
    files: list[str]
    vectors: np.ndarray
    model: str
    weights_sha256: str = ""
    backend: str = "torch"
    """The inference back-end that made the embeddings; image queries are embedded with the same
    (torch where that was the GPU's), since back-ends differ in the last digits."""
    _graph: object = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingIndex:
        """Read an `embed` output (a .parquet file or a dataset folder)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        path = Path(path)
        if not path.exists():
            raise CatalogError(f"index {path}: not found")
        try:
            dataset = ds.dataset(path, format="parquet", exclude_invalid_files=True)
            table = dataset.to_table(columns=["id", "file", "embedding"])
        except (OSError, KeyError, pa.ArrowException) as error:
            raise CatalogError(f"index {path}: not an embeddings file from `galaxymorph embed` ({error})") from error
        if not pa.types.is_fixed_size_list(table.schema.field("embedding").type):
            raise CatalogError(f"index {path}: its embedding column holds no vectors")
        table = table.filter(pc.is_finite(pc.list_element(table["embedding"], 0)))
        if not table.num_rows:
            raise CatalogError(f"index {path}: no embeddings (every image failed?)")
        vectors = np.asarray(table["embedding"].combine_chunks().flatten()).reshape(table.num_rows, -1)
        provenance = json.loads((dataset.schema.metadata or {}).get(b"galaxymorph", b"{}"))
        return cls(path, [str(value) for value in table["id"].to_pylist()], table["file"].to_pylist(),
                   np.ascontiguousarray(vectors, dtype=np.float32), provenance.get("model", ""),
                   provenance.get("weights_sha256", ""), provenance.get("backend", "torch"))

    def made_with(self, loaded: LoadedModel) -> bool:
        """Whether these embeddings come from this model (the same weights where both are known)."""
        if self.weights_sha256 and loaded.weights_sha256 and self.weights_sha256 != "not saved":
            return self.weights_sha256 == loaded.weights_sha256
        return self.model == loaded.name

    @cached_property
    def rows_of_id(self) -> dict[str, list[int]]:
        rows: dict[str, list[int]] = {}
        for row, row_id in enumerate(self.ids):
            rows.setdefault(row_id, []).append(row)
        return rows

    @cached_property
    def row_of_file(self) -> dict[str, int]:
        return {str(Path(file).resolve()): row for row, file in enumerate(self.files) if file}

    def query_vectors(self, queries: Sequence[str], model: LoadedModel | None = None) -> tuple[np.ndarray, list[list[int]]]:
        """A vector per query, an id or file of the index or another image file (embedded with
        `model`, else the index's model), and the rows each query's neighbours leave out: every row
        of its id, or its file's row."""
        vectors, own = [], []
        classifier = None
        for query in queries:
            rows = self.rows_of_id.get(query) or [self.row_of_file[key] for key in [str(Path(query).resolve())]
                                                  if key in self.row_of_file]
            if rows:
                vectors.append(self.vectors[rows[0]])
                own.append(rows)
                continue
            if not Path(query).is_file():
                raise CatalogError(f"query {query!r}: neither an id in {self.path} nor an image file")
            if classifier is None:
                classifier = Classifier(model or load_model(self.model),
                                        backend=self.backend if self.backend in ("onnx", "onnx-int8") else "torch")
            pixels = read_model_input(query, classifier.loaded.preprocessing).pixels
            vectors.append(classifier.embeddings(pixels[None])[0])
            own.append([])
        return np.array(vectors, dtype=np.float32).reshape(len(queries), -1), own

    def search(self, queries: np.ndarray, k: int, own: Sequence[Sequence[int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The `k` nearest rows of each query vector and their cosine distances, nearest first,
        leaving out each query's `own` rows (fewer than k where the index holds fewer)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        wanted = min(k + max((len(rows) for rows in own), default=0), len(self.ids))
        if len(self.ids) <= EXACT_LIMIT:
            rows, distances = _exact(self.vectors, queries, wanted)
        else:
            graph = self.graph()
            graph.hnsw.efSearch = max(HNSW_SEARCH_DEPTH, wanted)
            similarities, rows = graph.search(queries, wanted)
            distances = 1.0 - similarities
        kept_rows, kept_distances = [], []
        for query_rows, query_distances, left_out in zip(rows, distances, own):
            keep = ~np.isin(query_rows, list(left_out)) & (query_rows >= 0)
            kept_rows.append(query_rows[keep][:k])
            kept_distances.append(query_distances[keep][:k])
        return kept_rows, kept_distances

    def graph(self):
        """The HNSW graph of the vectors (a faiss index): kept in memory, read from beside the index
        when it is newer than the embeddings, else built and saved there (when it can be)."""
        if self._graph is not None:
            return self._graph
        try:
            import faiss
        except ImportError as error:
            raise GalaxyMorphError(f"index {self.path}: {len(self.ids):,} embeddings are searched through a graph; "
                                   "pip install 'galaxymorph[search]' (FAISS)") from error
        saved = self.path.with_name(self.path.name + ".hnsw.faiss")
        embeddings = [self.path] if self.path.is_file() else list(self.path.glob("*.parquet"))
        if saved.is_file() and saved.stat().st_mtime >= max(p.stat().st_mtime for p in embeddings):
            graph = faiss.read_index(str(saved))
            if graph.ntotal == len(self.ids):
                self._graph = graph
                return graph
        graph = faiss.IndexHNSWFlat(self.vectors.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_BUILD_DEPTH
        graph.add(self.vectors)
        partial = saved.with_name(saved.name + ".partial")
        try:
            faiss.write_index(graph, str(partial))
            os.replace(partial, saved)
        except (OSError, RuntimeError) as error:  # a read-only folder: the graph serves this process alone
            logging.getLogger(__name__).warning("index %s: the search graph could not be kept (%s)", self.path, error)
        self._graph = graph
        return graph


def _exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of each query by cosine distance, by brute force in blocks."""
    rows, distances = [], []
    for start in range(0, len(queries), BLOCK):
        block = 1.0 - queries[start:start + BLOCK] @ vectors.T
        nearest = (np.argpartition(block, k - 1, axis=1)[:, :k] if k < block.shape[1]
                   else np.tile(np.arange(block.shape[1]), (len(block), 1)))
        order = np.take_along_axis(block, nearest, axis=1).argsort(axis=1, kind="stable")
        rows.append(np.take_along_axis(nearest, order, axis=1))
        distances.append(np.take_along_axis(block, rows[-1], axis=1))
    return np.concatenate(rows), np.concatenate(distances)


def similar(index: EmbeddingIndex, queries: Sequence[str], *, k: int = 10) -> list[dict]:
    """Rows `query, rank, id, file, distance`: the `k` nearest galaxies of each query (an id or file
    of the index, or another image file), rank 1 the nearest, the query itself left out."""
    vectors, own = index.query_vectors(queries)
    rows, distances = index.search(vectors, k, own)
    return [{"query": query, "rank": rank, "id": index.ids[row], "file": index.files[row], "distance": float(distance)}
            for query, query_rows, query_distances in zip(queries, rows, distances)
            for rank, (row, distance) in enumerate(zip(query_rows, query_distances), 1)]


def oddities(index: EmbeddingIndex, *, count: int = 100, neighbours: int = ODDITY_NEIGHBOURS) -> list[dict]:
    """Rows `rank, id, file, oddity`: the `count` least typical galaxies, those whose `neighbours`-th
    nearest neighbour is farthest (the lowest local density of the embeddings), oddest first."""
    if count < 1:
        raise ValueError(f"the number of oddities must be at least 1, got {count}")
    if len(index.ids) <= neighbours:
        raise GalaxyMorphError(f"index {index.path}: {len(index.ids)} embeddings, too few to judge {neighbours} "
                               "neighbours each")
    _, distances = index.search(index.vectors, neighbours, [[row] for row in range(len(index.ids))])
    oddity = np.array([row_distances[-1] for row_distances in distances])
    order = np.argsort(-oddity, kind="stable")[:count]
    return [{"rank": rank, "id": index.ids[row], "file": index.files[row], "oddity": float(oddity[row])}
            for rank, row in enumerate(order, 1)]
