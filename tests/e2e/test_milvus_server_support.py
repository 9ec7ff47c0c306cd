"""The real Milvus server that tests/support/milvus_server.py starts: it serves, it stops, it keeps data over a kill."""

from pathlib import Path

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from tests.support.milvus_server import kill_milvus_server, milvus_server_pids, run_milvus_server

pytestmark = pytest.mark.milvus_server

DIMENSION = 1280


def create_images_collection(client: MilvusClient, name: str) -> None:
    """The shape the predictor indexes: string ids, a 1280-d cosine embedding, the image URI and JSON metadata."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIMENSION)
    schema.add_field("uri", DataType.VARCHAR, max_length=2048)
    schema.add_field("metadata", DataType.JSON)
    index = MilvusClient.prepare_index_params()
    index.add_index(field_name="embedding", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index)


def random_rows(count: int) -> list[dict]:
    vectors = np.random.default_rng(7).standard_normal((count, DIMENSION)).astype(np.float32)
    return [
        {"id": f"img-{i}", "embedding": vectors[i].tolist(), "uri": f"file:///photos/{i}.jpg", "metadata": {"i": i}}
        for i in range(count)
    ]


def top_hit(client: MilvusClient, collection: str, vector: list[float]) -> dict:
    hits = client.search(
        collection, data=[vector], anns_field="embedding", limit=1, output_fields=["uri"], consistency_level="Strong"
    )
    return hits[0][0]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_server_round_trip_and_alias_then_stops_all_its_processes(tmp_path: Path) -> None:
    with run_milvus_server(tmp_path) as uri:
        assert uri.startswith("http://127.0.0.1:")
        pids = milvus_server_pids(uri)
        assert len(pids) == 2, "the milvus-server wrapper and the milvus binary"
        client = MilvusClient(uri=uri)
        create_images_collection(client, "images_v1")
        rows = random_rows(5)
        client.insert("images_v1", rows)
        client.create_alias("images_v1", "images")

        hit = top_hit(client, "images", rows[3]["embedding"])

        assert hit["id"] == "img-3"
        assert hit["entity"]["uri"] == "file:///photos/3.jpg"
        assert hit["distance"] == pytest.approx(1.0, abs=1e-4)
        assert client.describe_alias("images")["collection_name"] == "images_v1"
        client.close()
    assert not [pid for pid in pids if alive(pid)]


def test_hard_killed_server_restarts_on_the_same_data(tmp_path: Path) -> None:
    rows = random_rows(3)
    with run_milvus_server(tmp_path) as uri:
        client = MilvusClient(uri=uri)
        create_images_collection(client, "images_v1")
        client.insert("images_v1", rows)
        client.create_alias("images_v1", "images")
        client.close()
        pids = milvus_server_pids(uri)
        kill_milvus_server(uri)
        assert not [pid for pid in pids if alive(pid)]

    with run_milvus_server(tmp_path) as uri:
        client = MilvusClient(uri=uri)
        assert client.describe_alias("images")["collection_name"] == "images_v1"
        # After a restart the server reloads collections in the background; searching before that fails.
        client.load_collection("images_v1")
        assert top_hit(client, "images", rows[1]["embedding"])["id"] == "img-1"
        client.close()
