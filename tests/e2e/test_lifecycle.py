"""A model and its index move together: per-version collections, promote, rollback, canaries that never mix."""

import base64
import hashlib
import json
import re
import uuid
from dataclasses import replace

import httpx
import pytest

from harness.polling import wait_for
from harness.predictor_server import run_cli, run_predictor
from predictor.embedding.model_package import default_spec
from predictor.index.collection import versioned_collection

PHOTOS = ["chelsea", "coffee", "rocket", "astronaut"]


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def collections_table(uri: str, alias: str) -> dict[str, tuple[bool, str, int]]:
    rows = {}
    for line in ok(run_cli("collections", "--milvus-uri", uri, "--collection", alias)).splitlines():
        match = re.match(r"\s+(\*?)\s*(\S+__\S+)\s+(\S+)\s+\d+\s+(\d+)$", line)
        if match:
            rows[match.group(2)] = (match.group(1) == "*", match.group(3), int(match.group(4)))
    return rows


@pytest.fixture
def lifecycle(request, tmp_path, catalogue, package_copy):
    """A fresh place to work: its own lite file, or its own alias on the shared Milvus server."""
    if request.param == "milvus-lite":
        uri = str(tmp_path / "milvus.db")
    else:
        uri = request.getfixturevalue("milvus_server_uri")
    alias = f"life_{uuid.uuid4().hex[:8]}"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        (photos / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
    v2 = package_copy(tmp_path / "model-v2", "2")
    return uri, alias, photos, v2, tmp_path


def index(uri, alias, *sources, model_dir=None):
    extra = ["--model-dir", str(model_dir)] if model_dir else []
    return ok(run_cli("index", *map(str, sources), "--milvus-uri", uri, "--collection", alias, *extra))


@pytest.mark.parametrize("lifecycle", ["milvus-lite", "milvus-server"], indirect=True)
def test_promote_needs_a_complete_index_and_rollback_restores_the_previous_one(lifecycle):
    uri, alias, photos, v2, _ = lifecycle
    index(uri, alias, photos)
    default = default_spec().identity
    v2_identity = replace(default, version="2")
    v1_name, v2_name = versioned_collection(alias, default), versioned_collection(alias, v2_identity)
    assert collections_table(uri, alias) == {v1_name: (True, f"{default.name}:{default.version}", 4)}

    index(uri, alias, photos / "chelsea.jpg", photos / "coffee.jpg", model_dir=v2)
    refused = run_cli("promote", "--to", "2", "--milvus-uri", uri, "--collection", alias)
    assert refused.returncode == 2 and "holds 2 images but the live" in refused.stderr
    assert collections_table(uri, alias)[v1_name][0], "a refused promotion leaves the alias where it was"

    index(uri, alias, photos, model_dir=v2)
    assert "was " + v1_name in ok(run_cli("promote", "--to", "2", "--milvus-uri", uri, "--collection", alias))
    table = collections_table(uri, alias)
    assert table[v2_name] == (True, f"{v2_identity.name}:2", 4) and not table[v1_name][0]

    ok(run_cli("rollback", "--milvus-uri", uri, "--collection", alias))
    table = collections_table(uri, alias)
    assert table[v1_name][0] and not table[v2_name][0]


@pytest.mark.parametrize("lifecycle", ["milvus-lite"], indirect=True)
def test_canary_and_stable_each_search_their_own_models_collection(lifecycle):
    uri, alias, photos, v2, workdir = lifecycle
    index(uri, alias, photos)
    index(uri, alias, photos / "chelsea.jpg", photos / "coffee.jpg", model_dir=v2)
    v2_ids = {hashlib.sha256((photos / f"{n}.jpg").read_bytes()).hexdigest() for n in ("chelsea", "coffee")}
    query = {
        "instances": [{"image": {"b64": base64.b64encode((photos / "astronaut.jpg").read_bytes()).decode()}}],
        "parameters": {"top_k": 4},
    }
    with run_predictor(uri, workdir, "--collection", alias, "--model-dir", str(v2)) as canary:
        hits = httpx.post(f"{canary.http_url}/v1/models/image-search:predict", json=query, timeout=60).json()
        assert {hit["id"] for hit in hits["predictions"][0]} == v2_ids, "the canary reads only its model's vectors"
    with run_predictor(uri, workdir, "--collection", alias) as stable:
        hits = httpx.post(f"{stable.http_url}/v1/models/image-search:predict", json=query, timeout=60).json()
        assert len(hits["predictions"][0]) == 4 and hits["predictions"][0][0]["uri"].endswith("astronaut.jpg")


def test_canary_waits_for_its_index_and_turns_ready_when_it_is_built(tmp_path, milvus_server_uri, catalogue):
    alias = f"wait_{uuid.uuid4().hex[:8]}"
    photo = catalogue.photos["moon"]
    with run_predictor(milvus_server_uri, tmp_path, "--collection", alias, wait_for="/v2/health/live") as server:
        reason = httpx.get(f"{server.http_url}/v2/models/image-search/ready").json()["error"]
        assert "does not exist" in reason
        index(milvus_server_uri, alias, photo)
        wait_for(
            lambda: httpx.get(f"{server.http_url}/v2/health/ready", timeout=30).status_code == 200,
            timeout_s=60,
            what="readiness once the collection was indexed",
        )
        assert server.process.poll() is None


def test_changed_file_replaces_its_old_vector_and_deletes_are_idempotent(tmp_path, catalogue):
    uri, alias = str(tmp_path / "milvus.db"), "images"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        (photos / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
    index(uri, alias, photos)
    (photos / "coffee.jpg").write_bytes(catalogue.photos["moon"].read_bytes())
    out = index(uri, alias, photos)
    assert "added 1, skipped 3, failed 0, replaced 1" in out and "now holds 4 images" in out
    assert "added 0, skipped 4" in index(uri, alias, photos)

    chelsea_id = hashlib.sha256((photos / "chelsea.jpg").read_bytes()).hexdigest()
    assert "deleted 1" in ok(run_cli("delete", "--id", chelsea_id, "--milvus-uri", uri))
    assert "deleted 0" in ok(run_cli("delete", "--id", chelsea_id, "--milvus-uri", uri))
    out = ok(run_cli("delete", "--source", str(photos / "rocket.jpg"), "--milvus-uri", uri))
    assert "deleted 1" in out and "now holds 2 images" in out
    out = ok(run_cli("delete", "--source", str(photos), "--milvus-uri", uri))
    assert "deleted 2" in out and "now holds 0 images" in out


def test_eval_gate_passes_the_shipped_model_and_fails_an_impossible_bar(tmp_path):
    labelled = tmp_path / "labelled"
    ok(run_cli("sample-catalogue", "--labelled", "--out", str(labelled)))
    report_path = tmp_path / "report.json"
    passed = run_cli(
        "eval",
        "--labelled",
        str(labelled),
        "--min-precision",
        "0.9",
        "--min-recall",
        # Copies carry the realistic edits of docs/evaluation.md (2-8% crops, rotation or mirroring, JPEG 50-90),
        # and the sample's categories are quadrants of one photo each, so a copy competes with its own neighbours.
        "0.6",
        "--report",
        str(report_path),
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr
    scores = json.loads(report_path.read_text())["scores"]
    assert scores["precision_at_5"] >= 0.9 and scores["near_duplicate_recall_at_1"] >= 0.6
    assert scores["precision_at_1"] >= scores["precision_at_5"] and 0 < scores["map_at_10"] <= 1
    assert set(scores["precision_at_5_by_category"]) >= {"brick", "grass", "moon", "motorcycle"}
    failed = run_cli("eval", "--labelled", str(labelled), "--min-recall", "1.01", "--report", str(report_path))
    assert failed.returncode == 1 and "FAILED: near-duplicate recall@1" in failed.stderr
