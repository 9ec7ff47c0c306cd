"""A collection made before namespaces (primary key = content SHA-256, no namespace field) keeps working as the default
namespace. It is built here with the schema the earlier release created, through pymilvus, from real embeddings."""

import base64
import hashlib
import json
import uuid

import httpx
import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from harness.predictor_server import run_cli, run_predictor
from predictor.embedding.backbone import Backbone
from predictor.embedding.model_package import default_spec
from predictor.imaging.decoding import ImageLimits, load_pixels
from predictor.index.collection import versioned_collection
from tests.e2e.conftest import BACKENDS

OLD_PHOTOS = ["chelsea", "coffee", "rocket", "moon", "brick"]


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_legacy_collection(uri: str, alias: str, photos: dict) -> str:
    """The collection, alias and identity property exactly as the release before namespaces wrote them."""
    spec = default_spec()
    backbone = Backbone(spec, "cpu")
    backbone.load()
    pixels = np.stack([load_pixels(path.read_bytes(), ImageLimits(), spec.preprocessing) for path in photos.values()])
    vectors = backbone.run(pixels).embeddings
    name = versioned_collection(alias, spec.identity)
    client = MilvusClient(uri=uri)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dimension)
    schema.add_field("uri", DataType.VARCHAR, max_length=2048)
    schema.add_field("metadata", DataType.JSON)
    index_params = MilvusClient.prepare_index_params()
    index_params.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
    identity = {"name": spec.name, "version": spec.version, "dimension": spec.dimension}
    client.create_collection(
        collection_name=name,
        schema=schema,
        index_params=index_params,
        consistency_level="Strong",
        properties={"image_search.model": json.dumps(identity)},
    )
    client.upsert(
        name,
        data=[
            {
                "id": sha(path),
                "vector": vector.tolist(),
                "uri": str(path.resolve()),
                "metadata": {"filename": path.name},
            }
            for path, vector in zip(photos.values(), vectors, strict=True)
        ],
    )
    client.create_alias(name, alias)
    client.close()
    if "://" not in uri:
        # milvus-lite serves a file from a thread of the process that opened it, and holds its lock until stopped.
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)
    return name


@pytest.fixture(scope="module", params=BACKENDS)
def legacy(request, catalogue, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("legacy")
    uri = str(workdir / "milvus.db") if request.param == "milvus-lite" else request.getfixturevalue("milvus_server_uri")
    alias = f"old_{uuid.uuid4().hex[:8]}"
    old = {name: catalogue.photos[name] for name in OLD_PHOTOS}
    make_legacy_collection(uri, alias, old)
    return uri, alias, workdir


def cli(legacy, *args):
    uri, alias, _ = legacy
    return run_cli(*args, "--milvus-uri", uri, "--collection", alias)


def test_a_legacy_collection_is_the_default_namespace_for_writes_and_searches(legacy, catalogue):
    uri, alias, workdir = legacy
    again = cli(legacy, "index", *(str(catalogue.photos[name]) for name in OLD_PHOTOS))
    assert again.returncode == 0, again.stderr
    assert "added 0, skipped 5" in again.stdout, "rows written before namespaces are recognised"
    added = cli(legacy, "index", str(catalogue.photos["coins"]))
    assert "added 1, skipped 0" in added.stdout and "now holds 6 images" in added.stdout
    refused = cli(legacy, "index", str(catalogue.photos["grass"]), "--namespace", "shop")
    assert refused.returncode == 2 and "made before namespaces" in refused.stderr and "new collection" in refused.stderr
    manifest = workdir / "labels.jsonl"
    manifest.write_text(json.dumps({"id": sha(catalogue.photos["rocket"]), "category": "space"}) + "\n")
    assert "metadata updated 1" in cli(legacy, "metadata", "set", "--metadata", str(manifest)).stdout
    deleted = cli(legacy, "delete", "--id", sha(catalogue.photos["brick"]))
    assert "deleted 1" in deleted.stdout and "now holds 5 images" in deleted.stdout

    with run_predictor(uri, workdir, "--collection", alias) as server:

        def search(instances, **parameters):
            body = {"instances": instances, "parameters": parameters}
            response = httpx.post(f"{server.http_url}/v1/models/image-search:predict", json=body, timeout=60)
            assert response.status_code == 200, response.text
            return response.json()["predictions"][0]

        moon = {"image": {"b64": base64.b64encode(catalogue.photos["moon"].read_bytes()).decode()}}
        hits = search([moon], top_k=3)
        assert hits[0]["id"] == sha(catalogue.photos["moon"]) and hits[0]["score"] > 0.999
        assert [hit["id"] for hit in search([{"id": sha(catalogue.photos["moon"])}], top_k=5)].count(
            sha(catalogue.photos["moon"])
        ) == 0
        space = search([moon], top_k=5, filter='metadata["category"] == "space"')
        assert [hit["uri"].rsplit("/", 1)[-1] for hit in space] == ["rocket.jpg"]
        assert search([moon], namespace="shop") == [], "other namespaces are empty in a legacy collection"


def test_duplicates_in_a_collection_without_copy_signatures_are_scored_by_the_embedding(legacy):
    _, _, workdir = legacy
    out = workdir / "clusters.jsonl"
    found = cli(legacy, "duplicates", "--out", str(out))
    assert found.returncode == 0, found.stderr
    assert "stores no copy signatures" in found.stderr and "at threshold 0.9 " in found.stderr
    assert out.read_text() == "", "five different photos: no cluster"
