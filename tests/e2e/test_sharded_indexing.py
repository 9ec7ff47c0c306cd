"""Indexed-Job style indexing: shards in parallel against a Milvus server, one killed mid-run and restarted."""

import hashlib
import os
import signal
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.polling import wait_for
from harness.predictor_server import CLI, REPO_ROOT
from predictor.embedding.model_package import default_spec
from predictor.index.collection import versioned_collection
from predictor.index.ingestion import in_shard

SHARDS = 3


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory, catalogue) -> Path:
    """Distinct real images: each sample photo and its four quadrants."""
    directory = tmp_path_factory.mktemp("many")
    for name, path in catalogue.photos.items():
        pixels = np.asarray(Image.open(path).convert("RGB"))
        height, width = pixels.shape[0] // 2, pixels.shape[1] // 2
        parts = [pixels] + [pixels[y : y + height, x : x + width] for y in (0, height) for x in (0, width)]
        for number, part in enumerate(parts):
            Image.fromarray(np.ascontiguousarray(part)).save(directory / f"{name}-{number}.jpg", quality=90)
    return directory


def ids_in_collection(client, collection: str) -> list[str]:
    return [row["id"] for row in client.query(collection, filter='id != ""', output_fields=["id"], limit=16384)]


def shard_command(source: Path, uri: str, alias: str, shard: int, batch_size: int) -> list[str]:
    return [
        *CLI,
        "index",
        str(source),
        "--milvus-uri",
        uri,
        "--collection",
        alias,
        "--shard-index",
        str(shard),
        "--shard-count",
        str(SHARDS),
        "--batch-size",
        str(batch_size),
    ]


def test_killed_shard_rerun_gives_the_same_index_as_one_process(many_photos, milvus_server_uri):
    import grpc
    from pymilvus import MilvusClient, MilvusException

    client = MilvusClient(uri=milvus_server_uri)
    sharded = f"sharded_{uuid.uuid4().hex[:6]}"
    identity = default_spec().identity
    victim = 0
    victim_ids = {
        hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(many_photos.glob("*.jpg"))
        if in_shard(path.resolve(), victim, SHARDS)
    }
    assert len(victim_ids) >= 10, "the killed shard needs enough work to be caught mid-run"

    processes = {
        shard: subprocess.Popen(
            shard_command(many_photos, milvus_server_uri, sharded, shard, batch_size=1 if shard == victim else 4),
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        for shard in range(SHARDS)
    }
    collection = versioned_collection(sharded, identity)

    def victim_is_midway() -> bool:
        try:
            wanted = ", ".join(f'"{image_id}"' for image_id in sorted(victim_ids))
            present = len(client.query(collection, filter=f"id in [{wanted}]", output_fields=["id"], timeout=10))
        except (MilvusException, grpc.RpcError):
            # Not created or not loaded yet; or the query timed out: Milvus 2.3 can leave a query on a collection
            # that another client is creating unanswered for ever.
            return False
        return 0 < present < len(victim_ids)

    wait_for(victim_is_midway, timeout_s=240, what="the victim shard writing its first rows", interval_s=0.1)
    assert processes[victim].poll() is None, "the victim finished before it could be killed"
    processes[victim].send_signal(signal.SIGKILL)
    processes[victim].wait(30)
    for shard, process in processes.items():
        if shard != victim:
            assert process.wait(300) == 0
    rerun = subprocess.run(
        shard_command(many_photos, milvus_server_uri, sharded, victim, 4), cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "skipped" in rerun.stdout and "added 0," not in rerun.stdout

    # An image's id is the hash of its bytes: what one process indexing the folder writes.
    every_id = {hashlib.sha256(path.read_bytes()).hexdigest() for path in many_photos.glob("*.jpg")}
    sharded_ids = ids_in_collection(client, collection)
    assert len(sharded_ids) == len(set(sharded_ids)), "no duplicates"
    assert set(sharded_ids) == every_id, "no gaps: the same ids as one process"
    count = client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
    assert count == len(every_id) == len(list(many_photos.glob("*.jpg")))
