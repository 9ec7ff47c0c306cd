"""`image-search register` and `image-search registry promote|resolve`: model packages in the MLflow Model Registry."""

import argparse
import json
import os
from pathlib import Path

from predictor.cli.mlflow_options import DEFAULT_EXPERIMENT

DEFAULT_MODEL_NAME = "image-search"
ALIASES = ("champion", "challenger")


def _client(args: argparse.Namespace):
    from predictor.registry.mlflow_client import connect

    return connect(args.mlflow_uri)


def _register(args: argparse.Namespace) -> int:
    client = _client(args)
    from predictor.registry.packages import register_package

    registered, created = register_package(client, args.name, Path(args.model_dir), args.experiment, args.run_id)
    if args.json:
        print(json.dumps({**registered.as_dict(), "created": created}))
    elif created:
        print(f"registered {registered.package} as {registered.uri}, linked to evaluation run {registered.run_id}")
    else:
        print(f"{registered.uri} already holds this package (weights {registered.weights_sha256}); nothing registered")
    return 0


def _promote(args: argparse.Namespace) -> int:
    client = _client(args)
    from predictor.registry.packages import promote

    previous = promote(client, args.name, args.alias, args.version)
    was = f"version {previous}" if previous else "unset"
    print(f"{args.name}@{args.alias} -> version {args.version} (was {was})")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    from predictor.registry.storage_uri import parse_model_uri, storage_uri

    reference = parse_model_uri(args.model_uri)
    client = _client(args)
    from predictor.registry.packages import download_package, lookup

    registered = lookup(client, reference)
    if args.download:
        spec = download_package(client, registered, Path(args.download))
        result = {**registered.as_dict(), "path": str(Path(args.download).resolve())}
        line = f"{registered.uri} ({spec.identity}) downloaded to {args.download}"
    else:
        result = {**registered.as_dict(), "storage_uri": storage_uri(registered.location, args.artifacts_destination)}
        line = result["storage_uri"]
    print(json.dumps(result) if args.json else line)
    return 0


def _add_registry_arguments(parser: argparse.ArgumentParser, name: bool = True) -> None:
    parser.add_argument(
        "--mlflow-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking server holding the registry. Env: MLFLOW_TRACKING_URI.",
    )
    if name:
        parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="Registered model name (default image-search).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a line of text.")


def register(add_command, for_serving: bool) -> None:
    registering = add_command(
        "register",
        help="Register a model package in the MLflow Model Registry, linked to its evaluation run.",
        description="Uploads the package to its evaluation run and registers it as a model version tagged with its "
        "weights' SHA-256. Idempotent: a package registered before is found by that hash. A package whose weights "
        "do not match model.json is refused.",
    )
    registering.add_argument("--model-dir", required=True, help="Model package directory (model.json + weights).")
    registering.add_argument(
        "--run-id", help="Evaluation run to link; default: the latest finished eval of this package in --experiment."
    )
    registering.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT),
        help="Experiment searched for the evaluation run. Env: MLFLOW_EXPERIMENT_NAME.",
    )
    _add_registry_arguments(registering)
    registering.set_defaults(handler=_register)

    registry = add_command("registry", help="Move registry aliases and resolve registered versions.")
    actions = registry.add_subparsers(dest="registry_command", required=True)

    promoting = actions.add_parser("promote", help="Point an alias (champion or challenger) at a version.")
    promoting.add_argument("--alias", required=True, choices=ALIASES, help="Alias to move.")
    promoting.add_argument("--version", required=True, help="Registered version number it should name.")
    _add_registry_arguments(promoting)
    promoting.set_defaults(handler=_promote)

    resolving = actions.add_parser(
        "resolve",
        help="Print a version's package location as a KServe storageUri, or download the package.",
        description="Prints the storageUri of models:/NAME@ALIAS or models:/NAME/VERSION for an InferenceService. "
        "With --download DIR it copies the package into DIR instead, after the same hash checks the server makes.",
    )
    resolving.add_argument("model_uri", help="models:/NAME@ALIAS or models:/NAME/VERSION.")
    resolving.add_argument(
        "--artifacts-destination",
        default=os.environ.get("MLFLOW_ARTIFACTS_DESTINATION"),
        help="The tracking server's own --artifacts-destination (e.g. s3://bucket/mlartifacts, or pvc://claim), "
        "needed when it proxies artifacts (mlflow-artifacts: locations). Env: MLFLOW_ARTIFACTS_DESTINATION.",
    )
    resolving.add_argument("--download", metavar="DIR", help="Copy the package into this empty or new directory.")
    _add_registry_arguments(resolving, name=False)
    resolving.set_defaults(handler=_resolve)
