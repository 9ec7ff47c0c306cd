"""Every documented environment variable, set as an operator would, read by the real `image-search` command.

The variables are those of docs/configuration.md and the chart's predictor and indexing containers. The
Milvus token, which needs a Milvus server with authentication, is tested in test_milvus_faults.py.
"""

import base64
import re

import httpx
import pytest

from harness.predictor_server import run_cli, run_predictor
from predictor.index.ingestion import in_shard

PHOTOS = ["chelsea", "coffee", "rocket", "astronaut", "moon", "camera"]


@pytest.mark.parametrize("variable", ["MILVUS_URI", "IMAGE_SEARCH_MILVUS_URI"])
def test_a_milvus_lite_path_in_either_variable_is_used_and_does_not_crash_pymilvus(tmp_path, variable):
    database = tmp_path / "from-env.db"
    made = run_cli("index", str(tmp_path), env={variable: str(database)})
    assert made.returncode == 0 and "Traceback" not in made.stderr, made.stderr
    assert database.exists()
    result = run_cli("collections", env={variable: str(database)})
    assert result.returncode == 0, result.stderr
    assert "* images__" in result.stdout, "the collection made through the variable is listed through it"
    assert "Traceback" not in result.stderr


def test_the_project_variable_wins_over_the_pymilvus_one(tmp_path):
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    variables = {"IMAGE_SEARCH_MILVUS_URI": str(ours), "MILVUS_URI": str(theirs)}
    assert run_cli("index", str(tmp_path), env=variables).returncode == 0
    assert ours.exists() and not theirs.exists()
    result = run_cli("collections", env=variables)
    assert result.returncode == 0, result.stderr
    assert "* images__" in result.stdout


@pytest.fixture(scope="module")
def environment(tmp_path_factory, package_copy) -> dict[str, str]:
    """A server and its indexing job configured by environment alone, with a model package of their own version."""
    workdir = tmp_path_factory.mktemp("environment")
    package = package_copy(workdir / "model", "env-1")
    return {
        "MILVUS_URI": str(workdir / "milvus.db"),
        "IMAGE_SEARCH_COLLECTION": "envtest",
        "MODEL_DIR": str(package),
        "IMAGE_SEARCH_DEVICE": "cpu",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "text",
        "IMAGE_SEARCH_NAMESPACE_HEADER": "x-tenant",
        "IMAGE_SEARCH_SEARCH_CONSISTENCY": "Strong",
        "IMAGE_SEARCH_UI": "true",
    }


def test_index_and_serve_configured_by_environment_alone(tmp_path, catalogue, environment):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        (photos / f"{name}.jpg").write_bytes(catalogue.photos[name].read_bytes())
    expected_collection = "envtest__efficientnet_lite0__env_1"

    # An Indexed Job: each pod learns its shard from JOB_COMPLETION_INDEX alone.
    added = []
    for shard in (0, 1):
        result = run_cli(
            "index", str(photos), "--shard-count", "2", env={**environment, "JOB_COMPLETION_INDEX": str(shard)}
        )
        assert result.returncode == 0, result.stderr
        assert expected_collection in result.stdout, "IMAGE_SEARCH_COLLECTION and MODEL_DIR name the collection"
        added.append(int(re.search(r"added (\d+)", result.stdout).group(1)))
    in_first_shard = sum(in_shard(path.resolve(), 0, 2) for path in photos.iterdir())
    assert added == [in_first_shard, len(PHOTOS) - in_first_shard]

    with run_predictor(None, tmp_path, env=environment) as server:
        # Ready means the server found its model's own collection under the alias, so it read all three.
        ready = httpx.get(f"{server.http_url}/v2/models/image-search/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        result = run_cli("query", str(photos / "coffee.jpg"), "--url", server.http_url, "--top-k", "1")
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip().endswith("coffee.jpg")
        photo = {"image": {"b64": base64.b64encode((photos / "coffee.jpg").read_bytes()).decode()}}
        elsewhere = httpx.post(
            f"{server.http_url}/v1/models/image-search:predict",
            json={"instances": [photo]},
            headers={"X-Tenant": "nobody"},
            timeout=60,
        )
        assert elsewhere.json()["predictions"] == [[]], "IMAGE_SEARCH_NAMESPACE_HEADER names the namespace header"
        page = httpx.get(f"{server.http_url}/ui/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], "IMAGE_SEARCH_UI serves /ui/"
        log = server.log()
    assert log.strip(), "the server logged nothing at all"
    assert not re.search(r"\bINFO\b", log), "LOG_LEVEL=WARNING still let INFO lines through"
    assert not any(line.startswith("{") for line in log.splitlines()), "LOG_FORMAT=text still wrote JSON"
