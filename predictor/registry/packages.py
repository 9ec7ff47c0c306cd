"""Model packages as versions in the MLflow Model Registry: register (idempotent by package hash), move aliases,
look a version up, and fetch its package back with the same hash checks the server applies at load.

A version's artifacts are exactly the package's files (`model_package.package_files`): model.json, the weights and
whatever else model.json references, such as a projection."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from predictor.embedding.model_package import MANIFEST_NAME, InvalidModelPackage, ModelSpec, load_package, package_files
from predictor.registry.eval_runs import GATE_TAG, PACKAGE_TAG, experiment_id_for, package_sha256
from predictor.registry.mlflow_client import TrackingError, mlflow_errors
from predictor.registry.storage_uri import ModelReference

PACKAGE_ARTIFACT = "model-package"
VERSION_WEIGHTS_TAG = "weights_sha256"
VERSION_PACKAGE_SHA_TAG = "package_sha256"
VERSION_PACKAGE_TAG = "package"
VERSION_PACKAGE_VERSION_TAG = "package_version"
VERSION_GATE_TAG = "eval_gate"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    location: str
    run_id: str | None
    weights_sha256: str | None
    package_sha256: str | None
    package: str | None
    package_version: str | None
    aliases: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "aliases": list(self.aliases),
            "package": self.package,
            "package_version": self.package_version,
            "weights_sha256": self.weights_sha256,
            "package_sha256": self.package_sha256,
            "run_id": self.run_id,
            "location": self.location,
        }


def register_package(
    client: MlflowClient, name: str, package_dir: Path, experiment: str, run_id: str | None = None
) -> tuple[RegisteredVersion, bool]:
    """The version holding this package, and whether this call created it. The package is checked first: one whose
    weights or projection do not match model.json's hashes is refused before anything is uploaded."""
    spec = load_package(package_dir)
    files = package_files(spec)
    digest = package_sha256(json.loads((package_dir / MANIFEST_NAME).read_text()))
    uri = client.tracking_uri
    with mlflow_errors(uri, f"registering {package_dir} as {name}"):
        existing = _versions_of_package(client, name, digest)
        if existing:
            registered = _describe(client, existing[0])
            _require_complete(client, registered, files)
            return registered, False
        run = _evaluation_run(client, spec, digest, experiment, run_id)
        _ensure_registered_model(client, name)
        for path in files:
            client.log_artifact(run.info.run_id, str(path), PACKAGE_ARTIFACT)
        version = client.create_model_version(
            name,
            f"{run.info.artifact_uri}/{PACKAGE_ARTIFACT}",
            run_id=run.info.run_id,
            tags={
                VERSION_WEIGHTS_TAG: spec.weights_sha256,
                VERSION_PACKAGE_SHA_TAG: digest,
                VERSION_PACKAGE_TAG: f"{spec.name}:{spec.version}",
                VERSION_PACKAGE_VERSION_TAG: spec.version,
                VERSION_GATE_TAG: run.data.tags.get(GATE_TAG, "unknown"),
            },
            description=f"model package {spec.identity}, evaluated in run {run.info.run_id}",
        )
        return _describe(client, version), True


def _require_complete(client: MlflowClient, registered: RegisteredVersion, files: tuple[Path, ...]) -> None:
    """A version found by hash must hold every file of the package; one that lacks some cannot be served, and saying
    "already registered" would hide that."""
    import mlflow.artifacts

    stored = {
        Path(entry.path).name
        for entry in mlflow.artifacts.list_artifacts(artifact_uri=registered.location, tracking_uri=client.tracking_uri)
    }
    missing = [path.name for path in files if path.name not in stored]
    if missing:
        raise TrackingError(
            f"{registered.uri} holds this package's model.json but not {', '.join(missing)}, so it cannot be served; "
            f"delete that version in MLflow and register the package again"
        )


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name, description="image-search embedding model packages")
        except MlflowException as race:
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def _versions_of_package(client: MlflowClient, name: str, digest: str) -> list[ModelVersion]:
    found = client.search_model_versions(f"name = '{_quoted(name)}' and tags.{VERSION_PACKAGE_SHA_TAG} = '{digest}'")
    return sorted(found, key=lambda version: int(version.version))


def _evaluation_run(client: MlflowClient, spec: ModelSpec, digest: str, experiment: str, run_id: str | None):
    """The run that evaluated exactly this package: the one named, or the latest finished one in the experiment."""
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise TrackingError(f"MLflow has no run {run_id}") from None
            raise
        evaluated = run.data.tags.get(PACKAGE_TAG)
        if evaluated != digest:
            what = f"evaluated package {evaluated[:12]}…" if evaluated else "is not an image-search evaluation"
            raise TrackingError(
                f"run {run_id} {what}, but {spec.identity} is package {digest[:12]}…; register the "
                "package that run evaluated, or evaluate this one with `image-search eval --mlflow-uri`"
            )
        return run
    runs = client.search_runs(
        [experiment_id_for(client, experiment, create=False)],
        filter_string=f"tags.`{PACKAGE_TAG}` = '{digest}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise TrackingError(
            f"no finished evaluation of {spec.identity} (package {digest[:12]}…) in experiment "
            f"{experiment!r}; run `image-search eval --model-dir ... --mlflow-uri ...` first, or pass --run-id"
        )
    return runs[0]


def promote(client: MlflowClient, name: str, alias: str, version: str) -> str | None:
    """Point `alias` at `version`; returns the version it pointed at before, if any."""
    with mlflow_errors(client.tracking_uri, f"moving {name}@{alias}"):
        _get_version(client, name, version)
        previous = _version_by_alias(client, name, alias)
        client.set_registered_model_alias(name, alias, version)
    return previous.version if previous else None


def lookup(client: MlflowClient, reference: ModelReference) -> RegisteredVersion:
    with mlflow_errors(client.tracking_uri, f"looking up {reference}"):
        if reference.alias:
            version = _version_by_alias(client, reference.name, reference.alias)
            if version is None:
                raise TrackingError(
                    f"{reference.name} has no alias {reference.alias!r}; set it with `image-search registry promote`"
                )
        elif reference.version is not None:
            version = _get_version(client, reference.name, reference.version)
        else:
            raise TrackingError(f"{reference} names neither a version nor an alias")
        return _describe(client, version)


def download_package(client: MlflowClient, registered: RegisteredVersion, destination: Path) -> ModelSpec:
    """Copy the version's package into `destination` only once every file has passed its check: the weights and the
    projection against model.json's hashes, model.json against the hash it was registered with. A refused package
    leaves nothing in `destination`, so a tampered artifact never lands where a server would load it."""
    import mlflow.artifacts

    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise TrackingError(f"--download {destination} must be an empty or new directory")
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Next to the destination, so that the checked package moves into place with one rename on the same filesystem.
    staging = Path(tempfile.mkdtemp(prefix=".image-search-download-", dir=destination.parent))
    try:
        with mlflow_errors(client.tracking_uri, f"downloading {registered.uri} from {registered.location}"):
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=registered.location, dst_path=str(staging), tracking_uri=client.tracking_uri
                )
            )
        try:
            spec = load_package(local)
        except InvalidModelPackage as error:
            reason = str(error).replace(str(local), registered.location)
            raise TrackingError(f"{registered.uri} is refused: {reason}") from None
        digest = package_sha256(json.loads((local / MANIFEST_NAME).read_text()))
        if registered.package_sha256 and digest != registered.package_sha256:
            raise TrackingError(
                f"{registered.uri} is refused: its model.json is package {digest[:12]}…, but the version was "
                f"registered as {registered.package_sha256[:12]}…: the artifact changed after registration"
            )
        # Only what the package consists of: a stray file in the store was never checked, so it is not served.
        wanted = {path.name for path in package_files(spec)}
        for path in local.iterdir():
            if path.name in wanted:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        _move_into(local, destination)
        return load_package(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into(checked: Path, destination: Path) -> None:
    """One rename where it can (it takes the place of a new or empty directory); file by file where the destination
    is a mount point, such as a volume mounted at /mnt/models, removing what it moved if a move fails."""
    try:
        os.replace(checked, destination)
        return
    except OSError:
        pass
    destination.mkdir(exist_ok=True)
    moved = []
    try:
        for path in checked.iterdir():
            moved.append(destination / path.name)
            shutil.move(str(path), moved[-1])
    except OSError:
        for path in moved:
            path.unlink(missing_ok=True)
        raise


def _get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, version)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(f"{name} has no version {version}") from None
        raise


def _version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _describe(client: MlflowClient, version: ModelVersion) -> RegisteredVersion:
    location = version.source
    if not location:
        raise TrackingError(f"{version.name} version {version.version} has no source: it names no package")
    if location.startswith("runs:/"):
        run_id, _, path = location.removeprefix("runs:/").partition("/")
        location = f"{client.get_run(run_id).info.artifact_uri}/{path}"
    elif location.startswith("models:/"):
        raise TrackingError(
            f"{version.name} version {version.version} points at an MLflow logged model ({location}), not a "
            "package registered by `image-search register`"
        )
    return RegisteredVersion(
        name=version.name,
        version=str(version.version),
        location=location,
        run_id=version.run_id or None,
        weights_sha256=version.tags.get(VERSION_WEIGHTS_TAG),
        package_sha256=version.tags.get(VERSION_PACKAGE_SHA_TAG),
        package=version.tags.get(VERSION_PACKAGE_TAG),
        package_version=version.tags.get(VERSION_PACKAGE_VERSION_TAG),
        aliases=tuple(sorted(version.aliases or ())),
    )


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")
