"""Tracked evaluations and the model registry, against a real MLflow tracking server.

The flow of the README's "Model lifecycle": export a package, eval it with --mlflow-uri, register it, point an alias
at it, resolve the alias to a storageUri or a downloaded package, and serve that package.
"""

import base64
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.mlflow_server import MLFLOW_MISSING, RunningMlflow, mlflow_installed
from tests.support.predictor_server import free_port, run_cli, run_predictor

pytestmark = pytest.mark.skipif(not mlflow_installed(), reason=MLFLOW_MISSING)

CATEGORIES = ("brick", "grass", "moon")
# Every measure of the report, by name: per-category ones as `<metric>.<category>`.
EXPECTED_METRICS = {
    "mean_precision_at_k",
    "near_duplicate_recall_at_1",
    "precision_at_k.brick",
    "precision_at_k.grass",
    "precision_at_k.moon",
}


def ok(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(result, *needles: str) -> str:
    """A user error: exit 2 and one line on stderr that says what is wrong, never a traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Three categories of four real photos each: small enough that an eval takes seconds."""
    full = tmp_path_factory.mktemp("labelled-full")
    ok(run_cli("sample-catalogue", "--labelled", "--out", str(full)))
    small = tmp_path_factory.mktemp("labelled")
    for category in CATEGORIES:
        shutil.copytree(full / category, small / category)
    return small


@pytest.fixture(scope="module")
def experiment() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def model_name() -> str:
    return f"image-search-{uuid.uuid4().hex[:8]}"


def export_package(directory: Path, version: str) -> Path:
    ok(run_cli("export-model", "--out", str(directory)))
    manifest = json.loads((directory / "model.json").read_text())
    (directory / "model.json").write_text(json.dumps({**manifest, "version": version}, indent=2))
    return directory


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return export_package(tmp_path_factory.mktemp("package") / "v2", "2")


@pytest.fixture(scope="module")
def tracked_eval(mlflow_server: RunningMlflow, labelled, package, experiment, tmp_path_factory):
    report_path = tmp_path_factory.mktemp("eval") / "report.json"
    result = run_cli(
        "eval",
        "--labelled",
        str(labelled),
        "--model-dir",
        str(package),
        "--report",
        str(report_path),
        "--mlflow-uri",
        mlflow_server.url,
        "--experiment",
        experiment,
        "--min-precision",
        "0.5",
    )
    assert "logged run" in ok(result)
    runs = mlflow_server.client().search_runs([experiment_id(mlflow_server, experiment)])
    assert len(runs) == 1, "one eval logs one run"
    return runs[0], json.loads(report_path.read_text())


@pytest.fixture(scope="module")
def registered(mlflow_server, tracked_eval, package, model_name, experiment) -> dict:
    result = run_cli(
        "register",
        "--model-dir",
        str(package),
        "--mlflow-uri",
        mlflow_server.url,
        "--name",
        model_name,
        "--experiment",
        experiment,
        "--json",
    )
    return json.loads(ok(result))


def experiment_id(mlflow_server: RunningMlflow, name: str) -> str:
    return mlflow_server.client().get_experiment_by_name(name).experiment_id


def content_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*.jpg")):
        entry = f"labelled/{path.relative_to(directory).as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n"
        digest.update(entry.encode())
    return digest.hexdigest()


def test_tracked_eval_logs_one_run_whose_metrics_equal_the_report(
    mlflow_server, tracked_eval, package, labelled, tmp_path
):
    run, report = tracked_eval
    assert set(run.data.metrics) == EXPECTED_METRICS
    for name, value in run.data.metrics.items():
        section, _, category = name.partition(".")
        assert value == (report[section][category] if category else report[section]), name

    manifest = json.loads((package / "model.json").read_text())
    params = run.data.params
    assert params["model.name"] == manifest["name"] and params["model.version"] == "2"
    assert params["model.architecture"] == manifest["architecture"]
    assert params["model.weights_sha256"] == manifest["weights_sha256"]
    assert params["model.preprocessing.resize_shorter_side"] == str(manifest["preprocessing"]["resize_shorter_side"])
    assert params["eval_set.images"] == "12" and params["eval_set.categories"] == "3"
    assert params["eval_set.sha256"] == content_hash(labelled)
    assert params["report.k"] == "5" and params["report.images"] == "12"
    assert params["eval.k"] == "5" and params["eval.min_precision"] == "0.5"
    assert run.data.tags["image_search.gate"] == "passed" and run.info.status == "FINISHED"

    client = mlflow_server.client()
    assert {artifact.path for artifact in client.list_artifacts(run.info.run_id)} == {"eval-report.json", "model.json"}
    logged = Path(client.download_artifacts(run.info.run_id, "eval-report.json", str(tmp_path)))
    assert json.loads(logged.read_text()) == report


def test_register_links_the_eval_run_and_is_idempotent(
    mlflow_server, tracked_eval, registered, package, model_name, experiment, tmp_path
):
    run, _ = tracked_eval
    manifest = json.loads((package / "model.json").read_text())
    assert registered["created"] and registered["run_id"] == run.info.run_id
    assert (
        registered["weights_sha256"] == manifest["weights_sha256"] and registered["package"] == "efficientnet-lite0:2"
    )
    assert registered["package_version"] == "2", "the version a canary and the collection alias take"
    version = mlflow_server.client().get_model_version(model_name, registered["version"])
    assert version.tags["weights_sha256"] == manifest["weights_sha256"] and version.run_id == run.info.run_id

    again = run_cli(
        "register",
        "--model-dir",
        str(package),
        "--mlflow-uri",
        mlflow_server.url,
        "--name",
        model_name,
        "--run-id",
        run.info.run_id,
    )
    assert f"models:/{model_name}/{registered['version']} already holds this package" in ok(again)
    assert len(mlflow_server.client().search_model_versions(f"name = '{model_name}'")) == 1

    # Same weights, another version: another package, which no run has evaluated.
    other = export_package(tmp_path / "v3", "3")
    args = ("--mlflow-uri", mlflow_server.url, "--name", model_name, "--experiment", experiment)
    refused(run_cli("register", "--model-dir", str(other), *args), "no finished evaluation of efficientnet-lite0:3")
    refused(run_cli("register", "--model-dir", str(other), *args, "--run-id", run.info.run_id), "evaluated package")

    weights = other / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    refused(run_cli("register", "--model-dir", str(other), *args), "SHA-256", "corrupt or do not belong")
    assert len(mlflow_server.client().search_model_versions(f"name = '{model_name}'")) == 1


def test_promote_and_resolve_round_trip_to_a_package_the_server_serves(
    mlflow_server, registered, model_name, tmp_path, catalogue
):
    registry = ("--mlflow-uri", mlflow_server.url)
    version = registered["version"]
    promoted = ok(
        run_cli("registry", "promote", "--alias", "challenger", "--version", version, "--name", model_name, *registry)
    )
    assert f"{model_name}@challenger -> version {version} (was unset)" in promoted
    challenger = f"models:/{model_name}@challenger"

    # The server proxies artifacts: the location names no storage until the server's destination is given.
    refused(run_cli("registry", "resolve", challenger, *registry), "mlflow-artifacts:", "--artifacts-destination")
    storage_uri = ok(
        run_cli(
            "registry", "resolve", challenger, *registry, "--artifacts-destination", str(mlflow_server.artifacts_dir)
        )
    ).strip()
    assert storage_uri.startswith(f"file://{mlflow_server.artifacts_dir}/")
    stored = Path(storage_uri.removeprefix("file://"))
    assert sorted(p.name for p in stored.iterdir()) == ["model.json", "weights.safetensors"]
    s3 = json.loads(
        ok(
            run_cli(
                "registry",
                "resolve",
                challenger,
                *registry,
                "--json",
                "--artifacts-destination",
                "s3://models/mlartifacts",
            )
        )
    )
    relative = stored.relative_to(mlflow_server.artifacts_dir).as_posix()
    assert s3["storage_uri"] == f"s3://models/mlartifacts/{relative}" and s3["aliases"] == ["challenger"]

    downloaded = tmp_path / "mnt-models"
    assert "downloaded to" in ok(run_cli("registry", "resolve", challenger, *registry, "--download", str(downloaded)))
    milvus = str(tmp_path / "milvus.db")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee", "rocket"):
        shutil.copy(catalogue.photos[name], photos)
    ok(run_cli("index", str(photos), "--milvus-uri", milvus, "--model-dir", str(downloaded)))
    query = {
        "instances": [{"image": {"b64": base64.b64encode(catalogue.photos["coffee"].read_bytes()).decode()}}],
        "parameters": {"top_k": 2},
    }
    with run_predictor(milvus, tmp_path, "--model-dir", str(downloaded)) as canary:
        hits = httpx.post(f"{canary.http_url}/v1/models/image-search:predict", json=query, timeout=60).json()
    assert hits["predictions"][0][0]["uri"].endswith("coffee.jpg")

    promoted = ok(
        run_cli("registry", "promote", "--alias", "champion", "--version", version, "--name", model_name, *registry)
    )
    assert "(was unset)" in promoted
    champion = json.loads(
        ok(
            run_cli(
                "registry",
                "resolve",
                f"models:/{model_name}@champion",
                *registry,
                "--json",
                "--artifacts-destination",
                str(mlflow_server.artifacts_dir),
            )
        )
    )
    assert champion["version"] == version and champion["storage_uri"] == storage_uri
    assert sorted(champion["aliases"]) == ["challenger", "champion"]
    refused(
        run_cli("registry", "promote", "--alias", "champion", "--version", "99", "--name", model_name, *registry),
        "has no version 99",
    )


def test_a_tampered_artifact_is_refused_by_download_and_by_the_server(mlflow_server, registered, model_name, tmp_path):
    registry = ("--mlflow-uri", mlflow_server.url, "--artifacts-destination", str(mlflow_server.artifacts_dir))
    reference = f"models:/{model_name}/{registered['version']}"
    stored = Path(ok(run_cli("registry", "resolve", reference, *registry)).strip().removeprefix("file://"))
    weights = stored / "weights.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"\x00" * 8)
    try:
        target = tmp_path / "mnt-models"
        refused(
            run_cli("registry", "resolve", reference, *registry, "--download", str(target)), "is refused", "SHA-256"
        )
        assert not target.exists() or not any(target.iterdir()), "nothing of a refused package is left to load"
        # What KServe's storage initializer copies from the storageUri, the server refuses at load.
        served = run_cli("serve", "--milvus-uri", str(tmp_path / "x.db"), "--model-dir", str(stored))
        assert served.returncode == 2 and "corrupt or do not belong to this package" in served.stderr
    finally:
        weights.write_bytes(original)


def test_an_eval_whose_logging_fails_keeps_its_report_and_exits_non_zero(mlflow_server, labelled, experiment, tmp_path):
    report = tmp_path / "report.json"
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = run_cli("eval", "--labelled", str(labelled), "--report", str(report), "--mlflow-uri", unreachable)
    refused(result, f"cannot reach the MLflow tracking server at {unreachable}", f"the report is kept at {report}")
    assert set(json.loads(report.read_text())["precision_at_k"]) == set(CATEGORIES)

    # A category with one image has no precision@k: MLflow would take the run, but it compares with no other.
    lonely = shutil.copytree(labelled, tmp_path / "lonely")
    for extra in sorted((lonely / "grass").iterdir())[1:]:
        extra.unlink()
    runs_before = len(mlflow_server.client().search_runs([experiment_id(mlflow_server, experiment)]))
    report.unlink()
    result = run_cli(
        "eval",
        "--labelled",
        str(lonely),
        "--report",
        str(report),
        "--mlflow-uri",
        mlflow_server.url,
        "--experiment",
        experiment,
    )
    refused(result, "no value for category 'grass'", "nothing was logged", f"the report is kept at {report}")
    assert "grass" not in json.loads(report.read_text())["precision_at_k"]
    assert len(mlflow_server.client().search_runs([experiment_id(mlflow_server, experiment)])) == runs_before


def test_a_nan_metric_is_refused_before_any_run_exists(mlflow_server, package, labelled, tmp_path):
    from predictor.tracking.client import TrackingError, connect
    from predictor.tracking.eval_runs import log_evaluation
    from predictor.tracking.eval_set import fingerprint

    report = tmp_path / "report.json"
    report.write_text('{"model": "m", "precision_at_k": {"brick": NaN, "grass": 1.0, "moon": 1.0}}')
    client = connect(mlflow_server.url)
    name = f"nan-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TrackingError, match=r"metric 'precision_at_k.brick' is nan.*nothing was logged"):
        log_evaluation(client, name, report, package, fingerprint(labelled), {}, gate_passed=True)
    assert client.get_experiment_by_name(name) is None, "refused before the experiment or a run was created"
