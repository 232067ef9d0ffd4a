"""Find more like this: the nearest neighbours of a galaxy, and the least typical galaxies, among
the embeddings that `galaxymorph embed` writes.

An index is that Parquet file or dataset folder: one row per image with `id`, `file` and
`embedding`, a unit vector (rows whose image failed have none and are left out). The distance is
the cosine distance, 1 - a.b. Up to `EXACT_LIMIT` vectors are searched exactly; larger indexes go
through a FAISS HNSW graph (the optional `search` extra), built once and kept beside the
embeddings as NAME.hnsw.faiss, which is rebuilt when the embeddings change.

    >>> index = EmbeddingIndex.load("embeddings.parquet")                 # doctest: +SKIP
    >>> similar(index, ["587722952767439450"], k=10)                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galaxymorph.errors import CatalogError, GalaxyMorphError
from galaxymorph.models import load_model
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
    """The embeddings of an index, with the ids and files of their rows and the model that made them."""

    path: Path
    ids: list[str]
    files: list[str]
    vectors: np.ndarray
    model: str

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingIndex:
        """Read an `embed` output (a .parquet file or a dataset folder)."""
        import pyarrow.dataset as ds

        path = Path(path)
        if not path.exists():
            raise CatalogError(f"index {path}: not found")
        try:
            dataset = ds.dataset(path, format="parquet")
            table = dataset.to_table(columns=["id", "file", "embedding"])
        except Exception as error:  # noqa: BLE001 - any unreadable index is this index's error
            raise CatalogError(f"index {path}: not an embeddings file from `galaxymorph embed` ({error})") from error
        table = table.filter(table["embedding"].is_valid())
        if not table.num_rows:
            raise CatalogError(f"index {path}: no embeddings (every image failed?)")
        vectors = np.asarray(table["embedding"].combine_chunks().flatten()).reshape(table.num_rows, -1)
        provenance = json.loads((dataset.schema.metadata or {}).get(b"galaxymorph", b"{}"))
        return cls(path, [str(value) for value in table["id"].to_pylist()], table["file"].to_pylist(),
                   np.ascontiguousarray(vectors, dtype=np.float32), provenance.get("model", ""))

    def query_vectors(self, queries: Sequence[str]) -> tuple[np.ndarray, list[int | None]]:
        """A vector per query, an id or file in the index or another image file (embedded with the
        index's model), and the query's own row (None for another file), which its neighbours leave out."""
        rows = {row_id: i for i, row_id in enumerate(self.ids)}
        by_file = {str(Path(file).resolve()): i for i, file in enumerate(self.files) if file}
        vectors, own = [], []
        classifier = None
        for query in queries:
            row = rows.get(query, by_file.get(str(Path(query).resolve())))
            if row is not None:  # an id, or a file, of the index
                vectors.append(self.vectors[row])
                own.append(row)
                continue
            if not Path(query).is_file():
                raise CatalogError(f"query {query!r}: neither an id in {self.path} nor an image file")
            if classifier is None:
                classifier = Classifier(load_model(self.model), backend="torch")
            pixels = read_model_input(query, classifier.loaded.preprocessing).pixels
            vectors.append(classifier.embeddings(pixels[None])[0])
            own.append(None)
        return np.array(vectors, dtype=np.float32).reshape(len(queries), -1), own

    def search(self, queries: np.ndarray, k: int, own: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest rows (Q, k) of each query vector and their cosine distances, nearest
        first, each query's own row left out."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        wanted = min(k + 1, len(self.ids))
        if len(self.ids) <= EXACT_LIMIT:
            rows, distances = _exact(self.vectors, queries, wanted)
        else:
            graph = self.graph()
            graph.hnsw.efSearch = max(HNSW_SEARCH_DEPTH, wanted)
            similarities, rows = graph.search(queries, wanted)
            distances = 1.0 - similarities
        kept_rows, kept_distances = [], []
        for query_rows, query_distances, self_row in zip(rows, distances, own):
            keep = (query_rows != self_row) & (query_rows >= 0)
            kept_rows.append(query_rows[keep][:k])
            kept_distances.append(query_distances[keep][:k])
        return np.array(kept_rows), np.array(kept_distances)

    def graph(self):
        """The HNSW graph of the vectors: read from beside the index when it is newer, else built and saved."""
        import faiss

        saved = self.path.with_name(self.path.name + ".hnsw.faiss") if self.path.is_file() else self.path / "index.hnsw.faiss"
        newest = max((p.stat().st_mtime for p in ([self.path] if self.path.is_file() else self.path.glob("*.parquet"))))
        if saved.is_file() and saved.stat().st_mtime >= newest:
            graph = faiss.read_index(str(saved))
            if graph.ntotal == len(self.ids):
                return graph
        graph = faiss.IndexHNSWFlat(self.vectors.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_BUILD_DEPTH
        graph.add(self.vectors)
        faiss.write_index(graph, str(saved))
        return graph


def _exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of each query by cosine distance, by brute force in blocks."""
    rows, distances = [], []
    for start in range(0, len(queries), BLOCK):
        block = 1.0 - queries[start:start + BLOCK] @ vectors.T
        nearest = np.argpartition(block, k - 1, axis=1)[:, :k] if k < block.shape[1] else np.tile(np.arange(block.shape[1]), (len(block), 1))
        order = np.take_along_axis(block, nearest, axis=1).argsort(axis=1, kind="stable")
        rows.append(np.take_along_axis(nearest, order, axis=1))
        distances.append(np.take_along_axis(block, rows[-1], axis=1))
    return np.concatenate(rows), np.concatenate(distances)


def similar(index: EmbeddingIndex, queries: Sequence[str], *, k: int = 10) -> list[dict]:
    """Rows `query, rank, id, file, distance`: the `k` nearest galaxies of each query (an id in the
    index, or an image file), rank 1 the nearest, the query itself left out."""
    vectors, own = index.query_vectors(queries)
    rows, distances = index.search(vectors, k, own)
    return [{"query": query, "rank": rank, "id": index.ids[row], "file": index.files[row], "distance": float(distance)}
            for query, query_rows, query_distances in zip(queries, rows, distances)
            for rank, (row, distance) in enumerate(zip(query_rows, query_distances), 1)]


def oddities(index: EmbeddingIndex, *, count: int = 100, neighbours: int = ODDITY_NEIGHBOURS) -> list[dict]:
    """Rows `rank, id, file, oddity`: the `count` least typical galaxies, those whose `neighbours`-th
    nearest neighbour is farthest (the lowest local density of the embeddings), oddest first."""
    if len(index.ids) <= neighbours:
        raise GalaxyMorphError(f"index {index.path}: {len(index.ids)} embeddings, too few to judge {neighbours} "
                               "neighbours each")
    _, distances = index.search(index.vectors, neighbours, range(len(index.ids)))
    oddity = distances[:, -1]
    order = np.argsort(-oddity, kind="stable")[:count]
    return [{"rank": rank, "id": index.ids[row], "file": index.files[row], "oddity": float(oddity[row])}
            for rank, row in enumerate(order, 1)]
