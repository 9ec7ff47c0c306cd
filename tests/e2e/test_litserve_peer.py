"""The serving benchmark's LitServe peer answers searches as the real server does, and stops with all its processes."""

import base64
from pathlib import Path

import httpx
import pytest

from benchmarks.e2e import run_peer_server
from harness.polling import wait_for
from harness.predictor_server import run_cli
from tests.e2e.conftest import near_duplicate


def running_in_group(group: int) -> list[int]:
    """The processes of a process group that have not ended; an ended one that is left waits only for its reaper."""
    running = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            state, _, process_group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(process_group) == group and state != "Z":
            running.append(int(entry.name))
    return running


@pytest.fixture(scope="module")
def lite_index(catalogue, tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("litserve-peer") / "milvus.db")
    result = run_cli("index", str(catalogue.directory), "--milvus-uri", uri, "--collection", "images")
    assert result.returncode == 0, result.stderr
    return uri


def test_the_litserve_peer_finds_the_original_and_stops_with_its_workers(catalogue, lite_index, tmp_path):
    query = base64.b64encode(near_duplicate(catalogue.photos["rocket"].read_bytes())).decode("ascii")
    peer = run_peer_server("benchmarks.litserve_server", lite_index, tmp_path, "--device", "cpu", "--compile", "off")
    with peer as (url, pid), httpx.Client(base_url=url, timeout=60.0) as client:
        found = client.post("/predict", json={"image_base64": query, "top_k": 3})
        broken = client.post("/predict", json={"image_base64": "not an image"})
    assert found.status_code == 200, found.text
    matches = found.json()["matches"]
    assert len(matches) == 3
    assert matches[0]["uri"].endswith("rocket.jpg") and matches[0]["score"] > matches[1]["score"]
    assert broken.status_code == 400, broken.text
    wait_for(lambda: not running_in_group(pid), 10, "every process of the peer to end")
