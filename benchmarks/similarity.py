"""Galaxy similarity search: neighbour quality on the gz1-sdss test split, and the index at scale.

Usage: python benchmarks/similarity.py [--model NAME] [--embeddings FILE] [--scale 1000000] [--queries 10]

Quality: the gz1-sdss images are embedded (`galaxymorph.embed`, or read from `--embeddings`); queries
and neighbours both come from the default model's saved test split (for any `--model`, a
`pretrain` encoder too), the query left out. Reported:
precision@10 of edge-on disks among an edge-on query's neighbours and of mergers among a merger's
(against the class's share of the split, which random neighbours would give), and how often the
neighbours of an elliptical or spiral query share its spiral/elliptical label (both restricted to
elliptical and spiral galaxies).

Scale: `--scale` synthetic unit vectors drawn from a Gaussian with the real embeddings' mean and
covariance (so the same dimension and spread), indexed with the FAISS HNSW graph that
`galaxymorph similar` builds beyond `similarity.EXACT_LIMIT` vectors: build time, the time of
`--queries` queries, resident memory, and recall@10 against exact search. Embedding throughput is
measured beside classify's on the same images.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from galaxymorph import PredictOptions, classify, embed, load_model
from galaxymorph.catalog import read_labelled_catalog
from galaxymorph.config import DEFAULT_MODEL
from galaxymorph.labels import binary_label
from galaxymorph.similarity import EmbeddingIndex, _exact
from galaxymorph.training.data import rows_of_split

GZ1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1-sdss"
K = 10


def quality(index: EmbeddingIndex, labels: dict[str, str]) -> None:
    rows = [i for i, row_id in enumerate(index.ids) if row_id in labels]
    sub = EmbeddingIndex(index.path, [index.ids[i] for i in rows], [index.files[i] for i in rows], index.vectors[rows], index.model)
    classes = np.array([labels[row_id] for row_id in sub.ids])
    neighbours = np.array(sub.search(sub.vectors, K, [[row] for row in range(len(sub.ids))])[0])
    print(f"test split: {len(sub.ids)} galaxies with embeddings, {K} neighbours each (query left out)")
    for name in ("edge_on_disk", "merger"):
        queries = np.flatnonzero(classes == name)
        precision = float(np.mean(classes[neighbours[queries]] == name))
        print(f"precision@{K} of {name} among a {name}'s neighbours: {precision:.3f} over {len(queries)} queries "
              f"(random: {np.mean(classes == name):.3f})")
    binary = np.array([binary_label(c) or "" for c in classes])
    known = np.flatnonzero(binary != "")
    known_index = EmbeddingIndex(sub.path, [sub.ids[i] for i in known], [sub.files[i] for i in known], sub.vectors[known], sub.model)
    near = np.array(known_index.search(known_index.vectors, K, [[row] for row in range(len(known))])[0])
    share = float(np.mean(binary[known][near] == binary[known][:, None]))
    print(f"neighbours sharing the spiral/elliptical label (elliptical and spiral galaxies only, {len(known)}): "
          f"{share:.3f} (goal >= 0.9; random: {np.mean(binary[known] == 'spiral') ** 2 + np.mean(binary[known] == 'elliptical') ** 2:.3f})")


def member_variants(loaded, catalog) -> None:
    """On the validation split: the members' features averaged (what `embed` writes) against each
    member's unit vector side by side, by how often neighbours share the spiral/elliptical label."""
    from galaxymorph import Classifier
    from galaxymorph.preprocess.augment import SYMMETRY_VIEWS, symmetry_views
    from galaxymorph.training.data import split_inputs

    labels = GZ1 / "labels.csv"
    rows = [i for i in rows_of_split(catalog.ids, loaded, "val", labels)]
    images = split_inputs(catalog, loaded, "val", labels, workers=2)
    classes = np.array([catalog.labels[i] for i in rows])[:len(images)]
    classifier = Classifier(loaded, features=True)
    features = np.concatenate([classifier.member_outputs(symmetry_views(images[start:start + 64]))[1].reshape(
        SYMMETRY_VIEWS, len(images[start:start + 64]), -1, classifier.embedding_size).mean(axis=0)
        for start in range(0, len(images), 64)])
    binary = np.array([binary_label(c) or "" for c in classes])
    known = binary != ""
    for name, vectors in (("mean of the members", features.mean(axis=1)),
                          ("members side by side", (features / np.linalg.norm(features, axis=2, keepdims=True)).reshape(len(features), -1))):
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)[known]
        near, _ = _exact(vectors, vectors, K + 1)
        print(f"validation split, {name}: neighbours sharing the spiral/elliptical label "
              f"{np.mean(binary[known][near[:, 1:]] == binary[known][:, None]):.3f} ({known.sum()} galaxies)")


def scale(index: EmbeddingIndex, count: int, queries: int) -> None:
    import faiss

    rng = np.random.default_rng(0)
    mean, covariance = index.vectors.mean(axis=0), np.cov(index.vectors, rowvar=False)
    vectors = rng.multivariate_normal(mean, covariance, size=count, method="cholesky").astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    asked = vectors[rng.choice(count, queries, replace=False)] + 0.01 * rng.standard_normal((queries, vectors.shape[1])).astype(np.float32)
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)
    from galaxymorph.similarity import HNSW_BUILD_DEPTH, HNSW_NEIGHBOURS, HNSW_SEARCH_DEPTH

    started = time.perf_counter()
    graph = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_BUILD_DEPTH
    graph.add(vectors)
    built = time.perf_counter() - started
    graph.hnsw.efSearch = HNSW_SEARCH_DEPTH
    started = time.perf_counter()
    _, found = graph.search(asked, K)
    searched = time.perf_counter() - started
    exact, _ = _exact(vectors, asked, K)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact)])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stored = len(faiss.serialize_index(graph)) / 2**20
    print(f"{count:,} synthetic {vectors.shape[1]}-d vectors (the real embeddings' mean and covariance): HNSW "
          f"(M={HNSW_NEIGHBOURS}, efConstruction={HNSW_BUILD_DEPTH}, efSearch={HNSW_SEARCH_DEPTH}) built in {built:.0f} s "
          f"(goal < 600 s), {queries} queries in {searched * 1e3:.0f} ms (goal < 1 s), recall@{K} against exact search "
          f"{recall:.3f} (goal >= 0.95); the index holds {stored:.0f} MB (vectors and graph; {stored / count * 1e7 / 1024:.1f} GB "
          f"for 10 million), peak memory of the process {peak:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--embeddings", type=Path, help="embeddings of gz1-sdss already written (else made here)")
    parser.add_argument("--scale", type=int, default=1_000_000, help="synthetic vectors for the scale figures (0: none)")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--variants", action="store_true", help="also compare ways of combining the members (validation split)")
    args = parser.parse_args()
    print(f"# similarity, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, Python {platform.python_version()}")
    catalog = read_labelled_catalog(GZ1 / "labels.csv")
    loaded = load_model(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        path = args.embeddings
        if path is None:
            path = Path(scratch) / "gz1.parquet"
            options = PredictOptions()
            started = time.perf_counter()
            embed([GZ1 / "labels.csv"], path, model=loaded, options=options)
            embedding_rate = len(catalog.ids) / (time.perf_counter() - started)
            print(f"throughput on {len(catalog.ids)} gz1-sdss images, {options.workers} decoding processes: embed "
                  f"{embedding_rate:.0f} images/s (8 views each)")
            if not loaded.metadata.get("encoder_only"):
                started = time.perf_counter()
                classify([GZ1 / "labels.csv"], Path(scratch) / "classified.parquet", model=loaded, options=options)
                print(f"classify {len(catalog.ids) / (time.perf_counter() - started):.0f} images/s")
        index = EmbeddingIndex.load(path)
        test = rows_of_split(catalog.ids, load_model(DEFAULT_MODEL), "test", GZ1 / "labels.csv")  # also for encoders
        quality(index, {catalog.ids[i]: catalog.labels[i] for i in test})
        if args.variants:
            member_variants(loaded, catalog)
        if args.scale:
            scale(index, args.scale, args.queries)


if __name__ == "__main__":
    main()
