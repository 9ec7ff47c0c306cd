"""The `image-search` command as a user runs it: index idempotently, survive bad files, query, refuse wrong models."""

import base64
import re

import httpx
import pytest

from harness.predictor_server import run_cli, run_predictor
from predictor.embedding.model_package import default_spec
from predictor.index.collection import versioned_collection

SUBSET = ["chelsea", "coffee", "rocket", "astronaut"]


def added_skipped(stdout: str) -> tuple[int, int, int]:
    match = re.search(r"added (\d+), skipped (\d+), failed (\d+)", stdout)
    assert match, stdout
    return tuple(int(n) for n in match.groups())


@pytest.fixture
def subset_dir(tmp_path, catalogue):
    directory = tmp_path / "photos" / "nested"
    directory.mkdir(parents=True)
    for name in SUBSET:
        (directory / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
    return directory.parent


def test_indexing_twice_adds_nothing_the_second_time(tmp_path, subset_dir):
    uri = str(tmp_path / "milvus.db")
    first = run_cli("index", str(subset_dir), "--milvus-uri", uri, "--batch-size", "3")
    assert first.returncode == 0, first.stderr
    assert added_skipped(first.stdout) == (len(SUBSET), 0, 0)
    second = run_cli("index", str(subset_dir), "--milvus-uri", uri)
    assert added_skipped(second.stdout) == (0, len(SUBSET), 0)
    assert f"now holds {len(SUBSET)} images" in second.stdout


def test_unreadable_and_broken_files_are_reported_and_the_rest_is_indexed(tmp_path, subset_dir, catalogue):
    (subset_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this jpeg stops here")
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(f"# extra photos\n{catalogue.photos['moon']}\n/nonexistent/missing.png\n")
    uri = str(tmp_path / "milvus.db")
    result = run_cli("index", str(subset_dir), str(manifest), "--milvus-uri", uri)
    assert result.returncode == 0, result.stderr
    assert added_skipped(result.stdout) == (len(SUBSET) + 1, 0, 2)
    assert "broken.jpg" in result.stderr and "missing.png" in result.stderr


def test_query_command_prints_the_most_similar_images(server, catalogue):
    photo = str(catalogue.photos["coffee"])
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_address)):
        result = run_cli("query", photo, "--url", url, "--transport", protocol, "--top-k", "2")
        assert result.returncode == 0, result.stderr
        rows = [line for line in result.stdout.splitlines() if re.match(r"\s+\d+\s+\d\.\d{3}", line)]
        assert len(rows) == 2 and rows[0].rstrip().endswith("coffee.jpg")


def test_query_command_takes_the_search_options(server, catalogue):
    photo = str(catalogue.photos["coffee"])

    def uris(*options: str) -> list[str]:
        result = run_cli("query", photo, *options)
        assert result.returncode == 0, result.stderr
        return [line.split()[-1] for line in result.stdout.splitlines() if re.match(r"\s+\d+\s+-?\d\.\d{3}", line)]

    second = uris("--url", server.http_url, "--top-k", "1", "--offset", "1", "--namespace", "default")
    assert len(second) == 1 and not second[0].endswith("coffee.jpg")
    only_coffee = 'metadata["filename"] == "coffee.jpg"'
    found = uris(
        "--url",
        server.grpc_address,
        "--transport",
        "grpc",
        "--top-k",
        "3",
        "--filter",
        only_coffee,
        "--min-score",
        "0.5",
    )
    assert len(found) == 1 and found[0].endswith("coffee.jpg")


def test_server_refuses_a_collection_built_by_another_model(tmp_path, subset_dir, package_copy):
    uri = str(tmp_path / "milvus.db")
    assert run_cli("index", str(subset_dir), "--milvus-uri", uri).returncode == 0
    package = package_copy(tmp_path / "other-model", "finetuned-2")
    default = default_spec().identity
    built_by_default = versioned_collection("images", default)
    result = run_cli("serve", "--milvus-uri", uri, "--collection", built_by_default, "--model-dir", str(package))
    assert result.returncode == 2
    assert f"was built by model {default}" in result.stderr
    assert f"runs {default.name}:finetuned-2" in result.stderr


def test_server_without_an_index_is_live_but_not_ready_and_says_why(tmp_path, catalogue):
    with run_predictor(str(tmp_path / "empty.db"), tmp_path, wait_for="/v2/health/live") as server:
        assert httpx.get(f"{server.http_url}/v2/health/ready").status_code == 503
        response = httpx.get(f"{server.http_url}/v2/models/image-search/ready")
        assert response.status_code == 503
        assert "does not exist" in response.json()["error"] and "index images first" in response.json()["error"]
        photo = base64.b64encode(catalogue.photos["coffee"].read_bytes()).decode()
        search = httpx.post(
            f"{server.http_url}/v1/models/image-search:predict", json={"instances": [{"image": {"b64": photo}}]}
        )
        assert search.status_code == 503 and "index images first" in search.json()["error"], search.text
        assert httpx.get(f"{server.http_url}/v2/models/image-classifier/ready").status_code == 200


def test_server_refuses_bad_configuration_with_what_to_change(tmp_path):
    result = run_cli("serve", "--milvus-uri", str(tmp_path / "x.db"), "--max-batch-size", "0")
    assert result.returncode == 2
    assert "--max-batch-size must be at least 1" in result.stderr


def test_server_refuses_a_model_package_whose_weights_do_not_match(tmp_path, package_copy):
    package = package_copy(tmp_path / "tampered")
    weights = package / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    result = run_cli("serve", "--milvus-uri", str(tmp_path / "x.db"), "--model-dir", str(package))
    assert result.returncode == 2
    assert "SHA-256" in result.stderr and "corrupt or do not belong to this package" in result.stderr
