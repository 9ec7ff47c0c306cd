"""`image-search reindex` rebuilds a collection's vector index in place from its stored vectors, on both Milvus kinds:
a collection made with another index ends up with the default one, the same rows and vectors, and still searchable."""

import uuid

import numpy as np
import pytest

from harness.predictor_server import run_cli
from predictor.embedding.model_package import default_spec
from predictor.index.collection import ImageIndex
from predictor.index.milvus import MilvusAccess
from predictor.index.search_options import SearchOptions
from tests.e2e.conftest import BACKENDS

PHOTOS = ["coins", "coffee", "clock", "camera", "moon", "rocket"]


@pytest.fixture(params=BACKENDS)
def milvus(request, tmp_path):
    """A milvus-lite file of this test's own, or the session's server."""
    if request.param != "milvus-lite":
        return request.getfixturevalue("milvus_server_uri")
    return str(tmp_path / "milvus.db")


def released(uri: str) -> None:
    """milvus-lite serves a file from a thread of the process that opened it, and holds its lock until stopped."""
    if "://" not in uri:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def test_reindex_moves_a_collection_to_the_default_index_without_embedding_again(milvus, catalogue, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        (photos / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
    alias = f"reindex_{uuid.uuid4().hex[:8]}"
    where = ["--milvus-uri", milvus, "--collection", alias]
    made = run_cli("index", str(photos), *where, "--index-type", "HNSW", "--index-params", "M=8,efConstruction=64")
    assert made.returncode == 0, made.stderr
    index = ImageIndex.for_model(MilvusAccess(milvus), alias, default_spec().identity)
    ids = sorted(index.ids_under("default", str(photos.resolve())))
    stored = index.vectors_of("default", ids)
    index.close()
    released(milvus)

    rebuilt = run_cli("reindex", *where)

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"rebuilt the index of {index.collection} ({len(PHOTOS)} rows)" in rebuilt.stdout
    assert '"index_type": "HNSW"' in rebuilt.stdout and '"index_type": "IVF_FLAT"' in rebuilt.stdout
    reopened = ImageIndex.open_for_search(MilvusAccess(milvus), alias, default_spec().identity)
    assert reopened.access.describe_index(reopened.collection)["index_type"] == "IVF_FLAT"
    assert reopened.vector_index.index_type == "IVF_FLAT" and reopened.count() == len(PHOTOS)
    after = reopened.vectors_of("default", ids)
    assert all(np.array_equal(stored[image_id], after[image_id]) for image_id in ids)
    for image_id in ids:
        hits = reopened.search(after[image_id][np.newaxis], SearchOptions(top_k=len(PHOTOS)))[0]
        assert hits[0].id == image_id and len(hits) == len(PHOTOS)
    reopened.close()
    released(milvus)


def test_reindex_of_a_collection_that_does_not_exist_says_so_in_one_line(milvus, tmp_path):
    if "://" not in milvus:
        # A milvus-lite path with nothing there is refused before any collection is looked for.
        (tmp_path / "empty").mkdir()
        assert run_cli("index", str(tmp_path / "empty"), "--milvus-uri", milvus).returncode == 0
    refused = run_cli("reindex", "--milvus-uri", milvus, "--collection", f"missing_{uuid.uuid4().hex[:8]}")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "does not exist" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
