"""Log one evaluation as one MLflow run: the package's params, the eval set, the report's metrics, both files.

Params, in four groups:
- `model.`: the package as the loader reads it (`model_package.manifest_of`), every field explicit, so a package
  written before a field existed (say, preprocessing `mode`) still records the value it is served with;
- `eval_set.`: the set's content hash and size;
- `eval.`: how it was scored: the gate's bars, and in process the device and the numeric precision the network ran
  at, or `served` when a running server answered;
- `report.`: the report's own non-measures (its model line, image and copy counts).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus

from predictor.embedding.model_package import MANIFEST_NAME, load_package, manifest_of
from predictor.registry.eval_set import EvalSet
from predictor.registry.mlflow_client import TrackingError, mlflow_errors
from predictor.registry.run_fields import UntrackableReport, flat_params, split_report

REPORT_ARTIFACT = "eval-report.json"
# Run tags that `register` reads back to find the evaluation of a package.
WEIGHTS_TAG = "image_search.weights_sha256"
PACKAGE_TAG = "image_search.package_sha256"
MODEL_TAG = "image_search.model"
EVAL_SET_TAG = "image_search.eval_set_sha256"
GATE_TAG = "image_search.gate"
# The report's description of the model: the `model.` params hold the same fields, from the package itself.
_REPORT_DUPLICATES = ("spec",)
# MLflow's per-request limits on log_batch.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    metrics: int


def log_evaluation(
    client: MlflowClient,
    experiment: str,
    report_path: Path,
    package_dir: Path,
    eval_set: EvalSet,
    options: Mapping[str, object],
    gate_passed: bool,
) -> LoggedRun:
    """Everything is checked before the run is created, so a report MLflow cannot take leaves no half-logged run.
    `options` are the eval's settings that bear on its figures, logged as `eval.` params."""
    report = json.loads(report_path.read_text())
    report = {key: value for key, value in report.items() if key not in _REPORT_DUPLICATES}
    manifest = json.loads((package_dir / MANIFEST_NAME).read_text())
    spec = load_package(package_dir)
    try:
        fields = split_report(report, eval_set.categories)
        metrics = fields.metrics
        params = {
            **flat_params("model", manifest_of(spec, str(spec.weights_sha256))),
            **eval_set.params(),
            **flat_params("eval", dict(options)),
            **fields.params,
        }
    except UntrackableReport as error:
        raise TrackingError(str(error)) from None
    tags = {
        MODEL_TAG: f"{spec.name}:{spec.version}",
        WEIGHTS_TAG: str(spec.weights_sha256),
        PACKAGE_TAG: package_sha256(manifest),
        EVAL_SET_TAG: eval_set.sha256,
        GATE_TAG: "passed" if gate_passed else "failed",
    }
    uri = client.tracking_uri
    with mlflow_errors(uri, f"finding experiment {experiment!r}"):
        experiment_id = experiment_id_for(client, experiment)
    with mlflow_errors(uri, "creating the evaluation run"):
        run = client.create_run(experiment_id, tags=tags, run_name=f"eval {tags[MODEL_TAG]}")
    run_id = run.info.run_id
    try:
        with mlflow_errors(uri, f"logging evaluation run {run_id}"):
            _log_values(client, run_id, metrics, params)
            _log_files(client, run_id, report_path, package_dir / MANIFEST_NAME)
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    except TrackingError:
        _mark_failed(client, run_id)
        raise
    return LoggedRun(run_id, experiment_id, len(metrics))


def package_sha256(manifest: Mapping) -> str:
    """A package's identity: its manifest, which pins the weights' hash, in canonical JSON. Two packages with the
    same weights but another version or preprocessing are different models."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def experiment_id_for(client: MlflowClient, name: str, create: bool = True) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        raise TrackingError(f"MLflow has no experiment {name!r}: no evaluation was tracked there (see --experiment)")
    try:
        return client.create_experiment(name)
    except MlflowException:
        # Another eval created it in the meantime.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _log_values(client: MlflowClient, run_id: str, metrics: dict[str, float], params: dict[str, str]) -> None:
    now = int(time.time() * 1000)
    param_items = [Param(key, value) for key, value in params.items()]
    metric_items = [Metric(key, value, now, 0) for key, value in metrics.items()]
    for start in range(0, len(param_items), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=param_items[start : start + _PARAMS_PER_BATCH])
    for start in range(0, len(metric_items), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metric_items[start : start + _METRICS_PER_BATCH])


def _log_files(client: MlflowClient, run_id: str, report_path: Path, manifest_path: Path) -> None:
    # Fixed names, whatever --report was called, so the report of any run is found at the same place.
    with tempfile.TemporaryDirectory() as staging:
        shutil.copyfile(report_path, Path(staging) / REPORT_ARTIFACT)
        shutil.copyfile(manifest_path, Path(staging) / MANIFEST_NAME)
        client.log_artifacts(run_id, staging)


def _mark_failed(client: MlflowClient, run_id: str) -> None:
    try:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
    except Exception:  # noqa: BLE001 - the server that just failed may not take this either; the first error matters
        pass
