"""Upgrading to a default model whose vectors mean something else never mixes them with the old ones: the old
collection is left exactly as it was, the new model indexes and serves its own, and the old one is refused."""

import base64
import re
import uuid

import httpx

from harness.polling import wait_for
from harness.predictor_server import run_cli, run_predictor
from predictor.embedding.model_package import default_spec, export_package, legacy_spec
from predictor.index.collection import versioned_collection


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def counts(uri: str, alias: str) -> dict[str, int]:
    table = ok(run_cli("collections", "--milvus-uri", uri, "--collection", alias))
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(\S+__\S+)\s+\S+\s+\d+\s+(\d+)\s*$", table, re.M)}


def test_the_new_default_leaves_the_old_collection_alone_and_never_searches_it(tmp_path, milvus_server_uri, catalogue):
    uri, alias = milvus_server_uri, f"upgrade_{uuid.uuid4().hex[:8]}"
    old_model, new_model = legacy_spec().identity, default_spec().identity
    old_name, new_name = versioned_collection(alias, old_model), versioned_collection(alias, new_model)
    assert old_name != new_name, "a default whose vectors changed must be a new model version"
    legacy = export_package(legacy_spec(), tmp_path / "legacy-model")
    photos = [str(catalogue.photos[name]) for name in ("chelsea", "coffee", "rocket")]
    ok(run_cli("index", *photos, "--milvus-uri", uri, "--collection", alias, "--model-dir", str(legacy)))
    assert counts(uri, alias) == {old_name: 3}

    with run_predictor(uri, tmp_path, "--collection", alias, wait_for="/v2/health/live") as server:
        reason = httpx.get(f"{server.http_url}/v2/models/image-search/ready").json()["error"]
        assert new_name in reason and "does not exist" in reason, "the old model's vectors are not served"
        ok(run_cli("index", photos[1], "--milvus-uri", uri, "--collection", alias))
        wait_for(
            lambda: httpx.get(f"{server.http_url}/v2/health/ready", timeout=30).status_code == 200,
            timeout_s=60,
            what="readiness once the new model's collection was indexed",
        )
        query = {"instances": [{"image": {"b64": base64.b64encode(catalogue.photos["chelsea"].read_bytes()).decode()}}]}
        query["parameters"] = {"top_k": 5}
        hits = httpx.post(f"{server.http_url}/v1/models/image-search:predict", json=query, timeout=60).json()
        assert [hit["uri"] for hit in hits["predictions"][0]] == [photos[1]], "only the new model's one vector"

    assert counts(uri, alias) == {old_name: 3, new_name: 1}
    refused = run_cli("serve", "--milvus-uri", uri, "--collection", old_name)
    assert refused.returncode == 2 and f"was built by model {old_model}" in refused.stderr
