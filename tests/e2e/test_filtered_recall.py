"""Filtered searches keep their recall at the default index, on both Milvus kinds: a small catalogue of a few
categories (where most of IVF's 1024 lists are empty) and a large one with a filter that keeps 1% of a namespace.

Rows go in through `ImageIndex`, the class the server searches with, and Milvus is made to build the index on every
row (flush, then wait until it reports them indexed), so the searches really run on IVF lists. Recall is against
exact search over the rows the namespace and filter keep; searching at the old fixed nprobe 32 shows what the
filter used to cost.
"""

import time
import uuid

import numpy as np
import pytest

from predictor.identity import ModelIdentity
from predictor.index.collection import ImageIndex, IndexRow
from predictor.index.milvus import MilvusAccess
from predictor.index.search_options import SearchOptions

DIMENSION = 128
CHUNK = 2_000


def clustered(size: int, categories: int, seed: int, draw: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in `categories` visual clusters (each a random direction plus noise), and each one's cluster;
    the clusters are the seed's, the points the draw's."""
    centres = np.random.default_rng(seed).standard_normal((categories, DIMENSION)).astype(np.float32)
    rng = np.random.default_rng([seed, draw])
    category = rng.integers(0, categories, size)
    vectors = centres[category] + 0.9 * rng.standard_normal((size, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), category


def indexed(uri: str, vectors: np.ndarray, metadata: list[dict], namespaces: list[str]) -> ImageIndex:
    index = ImageIndex.for_model(
        MilvusAccess(uri), f"filtered_{uuid.uuid4().hex[:8]}", ModelIdentity("clusters", "1", DIMENSION)
    )
    index.ensure_collection()
    for namespace in sorted(set(namespaces)):
        rows = [
            IndexRow(str(i), vectors[i], f"synthetic/{i}", metadata[i])
            for i in range(len(vectors))
            if namespaces[i] == namespace
        ]
        for start in range(0, len(rows), CHUNK):
            index.upsert(namespace, rows[start : start + CHUNK])
    index.access.call("flush", "flush", index.collection)
    deadline = time.monotonic() + 300
    while index.access.describe_index(index.collection).get("indexed_rows", 0) < len(vectors):
        assert time.monotonic() < deadline, "Milvus did not index every row within 300 s"
        time.sleep(0.2)
    # Loaded again, the query node holds the indexed segments; until then a Milvus 2.3 server searches new rows with
    # its interim index (nprobe 16 of 128 lists), whatever the search asks for (docs/search-index.md).
    index.access.call("release", "release_collection", index.collection)
    index.load()
    return index


def recall(index: ImageIndex, queries, expressions, keeps, vectors, namespace: str, effort=None, top_k=10) -> float:
    found = []
    for query, expression, keep in zip(queries, expressions, keeps, strict=True):
        options = SearchOptions(top_k=top_k, filter=expression, namespace=namespace, effort=effort)
        hits = index.search(query[np.newaxis], options)[0][:top_k]
        rows = np.flatnonzero(keep)
        best = set(rows[np.argsort(-(vectors[rows] @ query))[:top_k]].tolist())
        found.append(len({int(hit.id) for hit in hits} & best) / min(top_k, len(rows)))
    return float(np.mean(found))


@pytest.fixture(scope="module")
def small_catalogue(module_milvus):
    """275 images in 12 categories, like a clip-art catalogue with a category manifest."""
    vectors, category = clustered(275, 12, seed=1)
    index = indexed(module_milvus, vectors, [{"category": int(c)} for c in category], ["default"] * len(vectors))
    yield index, vectors, category
    index.access.call("drop_collection", "drop_collection", index.collection)
    index.close()


@pytest.fixture(scope="module")
def large_catalogue(module_milvus):
    """20,000 rows in 100 clusters, half of them in namespace `shop`, with a field that keeps 1% of them."""
    vectors, category = clustered(20_000, 100, seed=2)
    rng = np.random.default_rng(3)
    namespaces = np.where(rng.random(len(vectors)) < 0.5, "shop", "other").tolist()
    share = rng.integers(0, 100, len(vectors))
    metadata = [{"category": int(c), "share": int(s)} for c, s in zip(category, share, strict=True)]
    index = indexed(module_milvus, vectors, metadata, namespaces)
    yield index, vectors, category, np.array(namespaces), share
    index.access.call("drop_collection", "drop_collection", index.collection)
    index.close()


def test_a_category_filter_on_a_small_catalogue_finds_every_hit_it_should(small_catalogue):
    index, vectors, category = small_catalogue
    queries, query_category = clustered(30, 12, seed=1, draw=1)
    # Queries of one category, filtered to the next one: the "another category".
    others = (query_category + 1) % 12
    expressions = [f'metadata["category"] == {other}' for other in others]
    keeps = [category == other for other in others]
    for query, expression in zip(queries, expressions, strict=True):
        hits = index.search(query[np.newaxis], SearchOptions(top_k=8, filter=expression))[0]
        assert len(hits) >= 8, f"{expression} returned {len(hits)} hits"
    assert recall(index, queries, expressions, keeps, vectors, "default", top_k=8) >= 0.95


def test_a_one_percent_filter_inside_a_namespace_of_a_large_catalogue_keeps_its_recall(large_catalogue):
    index, vectors, category, namespaces, share = large_catalogue
    queries, _ = clustered(25, 100, seed=2, draw=1)
    expressions = ['metadata["share"] == 7'] * len(queries)
    keeps = [(share == 7) & (namespaces == "shop")] * len(queries)
    planned = recall(index, queries, expressions, keeps, vectors, "shop")
    fixed = recall(index, queries, expressions, keeps, vectors, "shop", effort=32)
    assert planned >= 0.95, f"recall@10 {planned:.3f} at the default effort"
    assert fixed < 0.9, f"a fixed nprobe 32 already reached {fixed:.3f}: this catalogue does not test the filter"


def test_a_category_of_one_percent_queried_from_another_keeps_its_recall(large_catalogue):
    index, vectors, category, namespaces, _ = large_catalogue
    queries, query_category = clustered(25, 100, seed=2, draw=2)
    others = (query_category + 1) % 100
    expressions = [f'metadata["category"] == {other}' for other in others]
    keeps = [(category == other) & (namespaces == "shop") for other in others]
    assert recall(index, queries, expressions, keeps, vectors, "shop") >= 0.95
