"""Ids are data, never part of a Milvus expression, on both Milvus kinds: ids holding quotes, backslashes, control
characters or any other text are read, found and deleted as themselves, and an id written to look like a filter
reaches no other row, least of all one of another namespace."""

import uuid

import numpy as np
import pytest

from predictor.identity import ModelIdentity
from predictor.index.collection import ImageIndex, IndexRow
from predictor.index.milvus import MilvusAccess
from tests.e2e.conftest import BACKENDS

ODD_IDS = [
    "it's",
    'say "cheese"',
    "both ' and \" quotes",
    "back\\slash\\",
    "naïve 日本 ✓",
    "a/b/../c",
    "control \x00\x01\x1f characters",
    "new\nline and\ttab",
    "not an escape: \\u0001",
]
# Each closes pymilvus's quoting of a key and adds a condition that every row of namespace "shop" meets.
CRAFTED = [
    "x'] or namespace == 'shop' or key in ['",
    'x"] or namespace == "shop" or key in ["',
    "x\\'] or namespace == 'shop' or key in ['",
]


def vector(seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=4).astype(np.float32)
    return values / np.linalg.norm(values)


@pytest.fixture(params=BACKENDS)
def index(request, tmp_path):
    lite = request.param == "milvus-lite"
    uri = str(tmp_path / "milvus.db") if lite else request.getfixturevalue("milvus_server_uri")
    index = ImageIndex.for_model(MilvusAccess(uri), f"ids_{uuid.uuid4().hex[:8]}", ModelIdentity("ids-test", "1", 4))
    index.ensure_collection()
    try:
        yield index
    finally:
        index.access.call("drop", "drop_collection", index.collection)
        index.close()
        if lite:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)


def test_odd_ids_are_stored_read_and_deleted_as_themselves(index):
    rows = [IndexRow(image_id, vector(n), f"/photos/{n}.jpg", {"n": n}) for n, image_id in enumerate(ODD_IDS)]
    assert index.upsert("default", rows) == len(ODD_IDS)
    for n, image_id in enumerate(ODD_IDS):
        stored = index.get("default", image_id)
        assert stored is not None
        assert (stored.id, stored.namespace, stored.uri, stored.metadata) == (
            image_id,
            "default",
            f"/photos/{n}.jpg",
            {"n": n},
        )
    assert index.existing_ids("default", [*ODD_IDS, "absent"]) == set(ODD_IDS)
    assert set(index.vectors_of("default", ODD_IDS)) == set(ODD_IDS)
    assert index.delete("default", ODD_IDS[:3]) == 3
    assert index.existing_ids("default", ODD_IDS) == set(ODD_IDS[3:]), "exactly the named rows were deleted"


def test_an_id_written_as_a_filter_finds_nothing_in_any_namespace(index):
    index.upsert("default", [IndexRow("mine", vector(1), "/photos/mine.jpg", {})])
    index.upsert("shop", [IndexRow("theirs", vector(2), "/photos/theirs.jpg", {"secret": True})])
    for crafted in CRAFTED:
        assert index.get("default", crafted) is None, crafted
        assert index.vectors_of("default", [crafted]) == {}, crafted
        assert index.existing_ids("default", [crafted]) == set(), crafted
        assert index.delete("default", [crafted]) == 0, crafted
    assert index.get("shop", "theirs") is not None, "the other namespace's row is still there"
    assert index.count() == 2


def test_a_source_folder_with_like_wildcards_in_its_name_covers_only_its_own_rows(index):
    # `_` and `%` are wildcards of a Milvus `like` pattern: /photos/a_b must not reach /photos/axb or /photos/a%b's
    # neighbours, nor a sibling whose name only starts the same.
    uris = ["/photos/a_b/1.jpg", "/photos/a_b", "/photos/axb/2.jpg", "/photos/a%b/3.jpg", "/photos/a%bc/4.jpg"]
    rows = [IndexRow(f"id-{n}", vector(n), uri, {}) for n, uri in enumerate(uris)]
    assert index.upsert("default", rows) == len(rows)
    assert sorted(index.ids_under("default", "/photos/a_b")) == ["id-0", "id-1"]
    assert sorted(index.ids_under("default", "/photos/a_b/")) == ["id-0"]
    assert index.ids_under("default", "/photos/a%b") == ["id-3"]


def test_a_scan_reads_every_row_of_its_namespace_once_with_its_vector_in_batches(index):
    # More rows than two batches, odd ids among them, and another namespace's rows under the same folder: a scan is
    # what `sync` and `duplicates` read, a page or a batch of vectors at a time.
    ids = [f"row-{n:04d}" for n in range(2 * 64 + 17)] + ODD_IDS
    rows = [IndexRow(image_id, vector(n), f"/photos/{n}.jpg", {"n": n}) for n, image_id in enumerate(ids)]
    assert index.upsert("default", rows) == len(rows)
    index.upsert("shop", [IndexRow("row-0000", vector(999), "/photos/0.jpg", {})])
    batches = list(index.scan("default", 'uri like "/photos/%"', ["id", "uri", "vector"], 64))
    assert all(0 < len(batch) <= 64 for batch in batches)
    scanned = {str(row["id"]): row for batch in batches for row in batch}
    assert sum(len(batch) for batch in batches) == len(scanned) == len(ids), "each row once, none of another namespace"
    for n, image_id in enumerate(ids):
        assert scanned[image_id]["uri"] == f"/photos/{n}.jpg"
        np.testing.assert_allclose(scanned[image_id]["vector"], vector(n), rtol=1e-6)
    assert [row["id"] for batch in index.scan("shop", None, ["id", "uri"], 64) for row in batch] == ["row-0000"]
