"""Tracked evaluations and the model registry, against a real MLflow tracking server.

The flow of docs/model-lifecycle.md: export a package, eval it with --mlflow-uri, register it, point an alias
at it, resolve the alias to a storageUri or a downloaded package, and serve that package.
"""

import base64
import hashlib
import json
import math
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from harness.mlflow_server import MLFLOW_MISSING, RunningMlflow, mlflow_installed
from harness.predictor_server import free_port, run_cli, run_predictor

pytestmark = pytest.mark.skipif(not mlflow_installed(), reason=MLFLOW_MISSING)

CATEGORIES = ("brick", "grass", "moon")
# The measures every gate and comparison reads; the per-category precision@5 is `precision_at_5.<category>`.
NAMED_METRICS = {"precision_at_1", "precision_at_5", "map_at_10", "near_duplicate_recall_at_1"}
# How the eval was scored; where files are and how long an option comparison takes are not params.
EVAL_PARAMS = {"eval.min_precision", "eval.min_recall", "eval.mode", "eval.device", "eval.precision"}


def report_measures(report: dict) -> dict[str, float]:
    """Every measure the report's scores hold, by the name MLflow gets: the named ones and any score added since."""
    scores = report["scores"]
    measures = {name: value for name, value in scores.items() if isinstance(value, float)}
    measures.update({f"precision_at_5.{c}": value for c, value in scores["precision_at_5_by_category"].items()})
    return measures


def file_hashes(directory: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in directory.iterdir()}


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


@pytest.fixture(scope="module")
def package(tmp_path_factory, package_copy) -> Path:
    return package_copy(tmp_path_factory.mktemp("package") / "v2", "2")


def precision_option() -> tuple[str, ...]:
    """fp32 asked for explicitly where eval chooses a precision itself, so that the recorded one is known."""
    return ("--precision", "fp32") if "--precision" in ok(run_cli("eval", "--help")) else ()


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
        "--device",
        "cpu",
        *precision_option(),
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
    measures = report_measures(report)
    assert NAMED_METRICS | {f"precision_at_5.{category}" for category in CATEGORIES} <= set(measures)
    assert run.data.metrics == measures

    manifest = json.loads((package / "model.json").read_text())
    params = run.data.params
    assert params["model.name"] == manifest["name"] and params["model.version"] == "2"
    assert params["model.architecture"] == manifest["architecture"]
    assert params["model.weights_sha256"] == manifest["weights_sha256"]
    assert params["model.preprocessing.mode"] == manifest["preprocessing"]["mode"]
    assert params["model.preprocessing.input_size"] == str(manifest["preprocessing"]["input_size"])
    assert params["model.pooling.kind"] == manifest["pooling"]["kind"]
    projection = manifest["projection"]
    assert params["model.projection.file"] == projection["file"]
    assert params["model.projection.sha256"] == projection["sha256"]
    assert params["model.projection.kind"] == projection["kind"]
    assert params["model.projection.output_dim"] == str(projection["output_dim"])
    assert params["eval_set.images"] == "12" and params["eval_set.categories"] == "3"
    assert params["eval_set.sha256"] == content_hash(labelled)
    assert params["report.scores.images"] == "12" and params["report.model"] == report["model"]
    assert not [name for name in params if name.startswith("report.spec.")], "model. params hold the package's fields"
    assert {name for name in params if name.startswith("eval.")} == EVAL_PARAMS
    assert params["eval.min_precision"] == "0.5" and params["eval.mode"] == "in-process"
    assert params["eval.device"] == "cpu" and params["eval.precision"] == "fp32"
    assert run.data.tags["image_search.gate"] == "passed" and run.info.status == "FINISHED"

    client = mlflow_server.client()
    assert {artifact.path for artifact in client.list_artifacts(run.info.run_id)} == {"eval-report.json", "model.json"}
    logged = Path(client.download_artifacts(run.info.run_id, "eval-report.json", str(tmp_path)))
    assert json.loads(logged.read_text()) == report


def test_a_legacy_package_records_the_preprocessing_it_is_served_with(
    mlflow_server, labelled, experiment, tmp_path, package_copy
):
    """model.json written before `mode` existed: the run says center-crop, as the loader reads it."""
    legacy = package_copy(tmp_path / "legacy", "legacy-1")
    manifest = json.loads((legacy / "model.json").read_text())
    manifest["preprocessing"] = {key: value for key, value in manifest["preprocessing"].items() if key != "mode"}
    (legacy / "model.json").write_text(json.dumps(manifest))
    # Two photos of two categories: what is checked here is the params, not the figures.
    few = tmp_path / "few"
    for category in CATEGORIES[:2]:
        (few / category).mkdir(parents=True)
        for photo in sorted((labelled / category).iterdir())[:2]:
            shutil.copy(photo, few / category)
    report = tmp_path / "report.json"
    args = ("--labelled", str(few), "--model-dir", str(legacy), "--report", str(report))
    ok(run_cli("eval", *args, "--mlflow-uri", mlflow_server.url, "--experiment", experiment))
    runs = mlflow_server.client().search_runs(
        [experiment_id(mlflow_server, experiment)],
        filter_string="tags.`image_search.model` = 'efficientnet-lite0:legacy-1'",
    )
    assert len(runs) == 1 and runs[0].data.params["model.preprocessing.mode"] == "center-crop"


def test_register_links_the_eval_run_and_is_idempotent(
    mlflow_server, tracked_eval, registered, package, model_name, experiment, tmp_path, package_copy
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
    other = package_copy(tmp_path / "v3", "3")
    args = ("--mlflow-uri", mlflow_server.url, "--name", model_name, "--experiment", experiment)
    refused(run_cli("register", "--model-dir", str(other), *args), "no finished evaluation of efficientnet-lite0:3")
    refused(run_cli("register", "--model-dir", str(other), *args, "--run-id", run.info.run_id), "evaluated package")

    # A package any of whose files does not match model.json is refused before anything is uploaded.
    for name in ("weights.safetensors", "projection.safetensors"):
        tampered = shutil.copytree(package, tmp_path / f"tampered-{name}")
        (tampered / name).write_bytes((tampered / name).read_bytes()[:-8] + b"\x00" * 8)
        refused(run_cli("register", "--model-dir", str(tampered), *args), "SHA-256", name, "corrupt or do not belong")
    assert len(mlflow_server.client().search_model_versions(f"name = '{model_name}'")) == 1


def test_promote_and_resolve_round_trip_to_a_package_the_server_serves(
    mlflow_server, registered, package, model_name, tmp_path, catalogue
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
    assert file_hashes(stored) == file_hashes(package), "every file of the package, and only those, as they were"
    assert {"model.json", "weights.safetensors", "projection.safetensors"} <= set(file_hashes(stored))
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
    assert file_hashes(downloaded) == file_hashes(package)
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


def flip_last_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-8] + b"\x00" * 8)


def rewrite_version(path: Path) -> None:
    """A model.json changed consistently: its hashes still match the files, so only the registered hash tells."""
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": "rewritten"}))


@pytest.fixture(scope="module")
def stored(mlflow_server, registered, model_name) -> Path:
    """Where the artifact store keeps the registered package: what KServe's storage initializer would copy."""
    registry = ("--mlflow-uri", mlflow_server.url, "--artifacts-destination", str(mlflow_server.artifacts_dir))
    reference = f"models:/{model_name}/{registered['version']}"
    return Path(ok(run_cli("registry", "resolve", reference, *registry)).strip().removeprefix("file://"))


def refused_download(mlflow_server, model_name, registered, tmp_path, *needles: str) -> None:
    target = tmp_path / "mnt-models"
    reference = f"models:/{model_name}/{registered['version']}"
    refused(
        run_cli("registry", "resolve", reference, "--mlflow-uri", mlflow_server.url, "--download", str(target)),
        "is refused",
        *needles,
    )
    assert not target.exists() or not any(target.iterdir()), "nothing of a refused package is left to load"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".image-search-download-")], "no staging left"


@pytest.mark.parametrize(
    ("name", "tamper", "refusal", "server_refusal"),
    [
        ("weights.safetensors", flip_last_bytes, "SHA-256", "corrupt or do not belong to this package"),
        ("projection.safetensors", flip_last_bytes, "SHA-256", "corrupt or do not belong to this package"),
        ("model.json", rewrite_version, "the artifact changed after registration", None),
    ],
    ids=["weights", "projection", "model-json-rewritten"],
)
def test_a_tampered_artifact_is_refused_by_download_and_by_the_server(
    mlflow_server, registered, model_name, stored, tmp_path, name, tamper, refusal, server_refusal
):
    original = (stored / name).read_bytes()
    tamper(stored / name)
    try:
        refused_download(mlflow_server, model_name, registered, tmp_path, refusal)
        if server_refusal:
            # What KServe's storage initializer copies from the storageUri, the server refuses at load.
            served = run_cli("serve", "--milvus-uri", str(tmp_path / "x.db"), "--model-dir", str(stored))
            assert served.returncode == 2 and server_refusal in served.stderr, served.stderr
    finally:
        (stored / name).write_bytes(original)


def test_a_download_holds_the_package_and_not_a_stray_file_of_the_store(
    mlflow_server, registered, package, model_name, stored, tmp_path
):
    stray = stored / "notes.txt"
    stray.write_text("never checked by any hash")
    try:
        target = tmp_path / "mnt-models"
        reference = f"models:/{model_name}/{registered['version']}"
        ok(run_cli("registry", "resolve", reference, "--mlflow-uri", mlflow_server.url, "--download", str(target)))
        assert file_hashes(target) == file_hashes(package)
    finally:
        stray.unlink()


def test_a_stored_package_that_lost_a_file_is_refused_by_download_and_by_register(
    mlflow_server, registered, package, model_name, experiment, stored, tmp_path
):
    projection = stored / "projection.safetensors"
    original = projection.read_bytes()
    projection.unlink()
    try:
        refused_download(mlflow_server, model_name, registered, tmp_path, "projection.safetensors is missing")
        # Found by its hash, the version would be "already registered": it is not, since it cannot be served.
        result = run_cli(
            "register", "--model-dir", str(package), "--mlflow-uri", mlflow_server.url, "--name", model_name,
            "--experiment", experiment,
        )  # fmt: skip
        refused(
            result, f"models:/{model_name}/{registered['version']}", "not projection.safetensors", "cannot be served"
        )
    finally:
        projection.write_bytes(original)


def test_an_eval_whose_logging_fails_keeps_its_report_and_exits_non_zero(mlflow_server, labelled, experiment, tmp_path):
    report = tmp_path / "report.json"
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = run_cli("eval", "--labelled", str(labelled), "--report", str(report), "--mlflow-uri", unreachable)
    refused(result, f"cannot reach the MLflow tracking server at {unreachable}", f"the report is kept at {report}")
    assert set(json.loads(report.read_text())["scores"]["precision_at_5_by_category"]) == set(CATEGORIES)

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
    assert "grass" not in json.loads(report.read_text())["scores"]["precision_at_5_by_category"]
    assert len(mlflow_server.client().search_runs([experiment_id(mlflow_server, experiment)])) == runs_before


def test_a_nan_metric_is_refused_before_any_run_exists(mlflow_server, tracked_eval, package, labelled, tmp_path):
    from predictor.registry.eval_runs import log_evaluation
    from predictor.registry.eval_set import fingerprint
    from predictor.registry.mlflow_client import TrackingError, connect

    _, real = tracked_eval
    report = tmp_path / "report.json"
    report.write_text(json.dumps({**real, "scores": {**real["scores"], "map_at_10": math.nan}}))
    client = connect(mlflow_server.url)
    name = f"nan-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TrackingError, match=r"metric 'map_at_10' is nan.*nothing was logged"):
        log_evaluation(client, name, report, package, fingerprint(labelled), {}, gate_passed=True)
    assert client.get_experiment_by_name(name) is None, "refused before the experiment or a run was created"


def test_an_option_comparison_is_refused_with_tracking_before_any_work(mlflow_server, labelled, experiment, tmp_path):
    runs_before = len(mlflow_server.client().search_runs([experiment_id(mlflow_server, experiment)]))
    report = tmp_path / "comparison.json"
    result = run_cli(
        "eval",
        "--labelled",
        str(labelled),
        "--compare",
        "--fit-set",
        str(labelled),
        "--report",
        str(report),
        "--mlflow-uri",
        mlflow_server.url,
        "--experiment",
        experiment,
        timeout=60,
    )
    refused(result, "--compare does not log to MLflow", "--model-dir PKG --mlflow-uri")
    assert not report.exists()
    assert len(mlflow_server.client().search_runs([experiment_id(mlflow_server, experiment)])) == runs_before
