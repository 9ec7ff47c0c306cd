"""Namespaces and metadata from the command line, on both Milvus kinds: rows keyed per namespace, idempotent re-runs
within one, deletes that stay in theirs, metadata updates that keep the vectors, and manifests checked up front."""

import hashlib
import json
import uuid

import numpy as np
import pytest
from pymilvus import MilvusClient

from harness.predictor_server import run_cli
from predictor.embedding.model_package import default_spec
from predictor.index.collection import versioned_collection
from tests.e2e.conftest import BACKENDS

PHOTOS = ["chelsea", "coffee", "rocket"]


@pytest.fixture(params=BACKENDS)
def place(request, tmp_path, catalogue):
    uri = (
        str(tmp_path / "milvus.db") if request.param == "milvus-lite" else request.getfixturevalue("milvus_server_uri")
    )
    alias = f"ns_{uuid.uuid4().hex[:8]}"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        (photos / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
    return uri, alias, photos, tmp_path


def cli(place, *args):
    uri, alias, _, _ = place
    return run_cli(*args, "--milvus-uri", uri, "--collection", alias)


def rows(place) -> dict[tuple[str, str], tuple[list[float], dict]]:
    uri, alias, _, _ = place
    client = MilvusClient(uri=uri)
    try:
        name = versioned_collection(alias, default_spec().identity)
        client.load_collection(name)
        found = client.query(name, filter='id != ""', output_fields=["namespace", "id", "vector", "metadata"])
    finally:
        client.close()
        if "://" not in uri:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)
    return {(row["namespace"], row["id"]): (row["vector"], row["metadata"]) for row in found}


def test_rows_are_keyed_per_namespace_and_stay_in_theirs(place):
    _, _, photos, workdir = place
    first = cli(place, "index", str(photos), "--namespace", "shop")
    assert first.returncode == 0, first.stderr
    assert "added 3" in cli(place, "index", str(photos)).stdout, "the same images in another namespace are new rows"
    again = cli(place, "index", str(photos), "--namespace", "shop")
    assert "added 0, skipped 3" in again.stdout and "namespace 'shop'" in again.stdout
    coffee = hashlib.sha256((photos / "coffee.jpg").read_bytes()).hexdigest()
    deleted = cli(place, "delete", "--id", coffee, "--namespace", "shop")
    assert "deleted 1" in deleted.stdout and "now holds 2 images" in deleted.stdout
    ids = {hashlib.sha256(path.read_bytes()).hexdigest() for path in photos.iterdir()}
    stored = rows(place)
    assert {key for key in stored if key[0] == "default"} == {("default", i) for i in ids}, "default was left alone"
    assert {key for key in stored if key[0] == "shop"} == {("shop", i) for i in ids - {coffee}}

    before = rows(place)
    manifest = workdir / "prices.jsonl"
    manifest.write_text(
        json.dumps({"path": "chelsea.jpg", "price": 12, "filename": None})
        + "\n"
        + json.dumps({"id": coffee, "price": 3})
        + "\n"
        + json.dumps({"id": "not-indexed", "price": 1})
        + "\n"
    )
    result = cli(place, "metadata", "set", "--metadata", str(manifest), "--root", str(photos))
    assert result.returncode == 0, result.stderr
    assert "metadata updated 2, unchanged 0, unmatched 1" in result.stdout and "not-indexed" in result.stderr
    after = rows(place)
    chelsea = hashlib.sha256((photos / "chelsea.jpg").read_bytes()).hexdigest()
    assert after[("default", chelsea)][1] == {"price": 12}, "null removed filename; price was added"
    assert after[("default", coffee)][1] == {"filename": "coffee.jpg", "price": 3}
    assert after[("shop", chelsea)][1] == before[("shop", chelsea)][1], "another namespace is untouched"
    for key, (vector, _) in before.items():
        np.testing.assert_array_equal(after[key][0], vector, err_msg=f"{key} was re-embedded")


@pytest.mark.parametrize("place", ["milvus-lite"], indirect=True)
def test_a_malformed_manifest_is_one_clear_error_and_nothing_is_written(place):
    uri, alias, photos, workdir = place
    manifest = workdir / "broken.jsonl"
    manifest.write_text(json.dumps({"path": "chelsea.jpg", "price": 1}) + "\n{oops\n")
    result = cli(place, "index", str(photos), "--metadata", str(manifest))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"image-search index: error: {manifest} line 2: not valid JSON (Expecting property name enclosed in double "
        "quotes)"
    )
    client = MilvusClient(uri=uri)
    try:
        assert not client.has_collection(versioned_collection(alias, default_spec().identity)), "nothing was written"
    finally:
        client.close()
        if "://" not in uri:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)
