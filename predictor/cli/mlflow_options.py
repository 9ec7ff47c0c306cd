"""`image-search eval --mlflow-uri`: log the evaluation as an MLflow run once its report is on disk."""

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

DEFAULT_EXPERIMENT = "image-search"
# Options of `eval` that bear on its figures or on whether it passed. Everything else says where things are (the
# eval set is logged by content hash, the package by its fields) or how long an option comparison takes.
SCORING_OPTIONS = ("min_precision", "min_recall")
COMPARE_REFUSED = (
    "--compare does not log to MLflow: it scores built-in options, none of which is a package that could be "
    "registered; export the option you choose as a package and run `image-search eval --model-dir PKG --mlflow-uri "
    "URI` on it, or drop --mlflow-uri"
)


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mlflow-uri",
        help="Log the evaluation as one run on this MLflow tracking server (needs the mlflow extra). Without it "
        "nothing is logged. A failure to log keeps the report and exits non-zero. Not with --compare.",
    )
    parser.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT),
        help=f"MLflow experiment of the run, created if missing (default {DEFAULT_EXPERIMENT}). "
        "Env: MLFLOW_EXPERIMENT_NAME.",
    )


def check_tracking_arguments(args: argparse.Namespace) -> None:
    """Refuse what cannot be tracked before any image is scored, rather than after minutes of work."""
    if args.mlflow_uri and getattr(args, "compare", False):
        raise ValueError(COMPARE_REFUSED)


def logged_options(args: argparse.Namespace, conditions: Mapping[str, object]) -> dict[str, object]:
    """The `eval.` params: the scoring options as given, then the conditions the figures were measured under."""
    options = {name: getattr(args, name) for name in SCORING_OPTIONS if getattr(args, name, None) is not None}
    return {**options, **conditions}


def track_evaluation(
    args: argparse.Namespace, report_path: Path, gate_passed: bool, conditions: Mapping[str, object]
) -> int:
    """0 when nothing was asked or the run was logged; 2, with one line on stderr, when logging failed."""
    if not args.mlflow_uri:
        return 0
    from predictor.registry.mlflow_client import TrackingError, connect

    try:
        run = _log(args, report_path, gate_passed, conditions, connect(args.mlflow_uri))
    except (TrackingError, ValueError, OSError) as error:
        print(
            f"image-search eval: error: MLflow logging failed: {error}; the report is kept at {report_path}",
            file=sys.stderr,
        )
        return 2
    print(f"logged run {run.run_id} ({run.metrics} metrics) in experiment {args.experiment!r} at {args.mlflow_uri}")
    return 0


def _log(args: argparse.Namespace, report_path: Path, gate_passed: bool, conditions: Mapping[str, object], client):
    from predictor.registry.eval_runs import log_evaluation
    from predictor.registry.eval_set import fingerprint

    options = logged_options(args, conditions)
    near_duplicates = getattr(args, "near_duplicates", None)
    eval_set = fingerprint(Path(args.labelled), Path(near_duplicates) if near_duplicates else None)

    def log(package: Path):
        return log_evaluation(client, args.experiment, report_path, package, eval_set, options, gate_passed)

    if args.model_dir:
        return log(Path(args.model_dir))
    # The bundled model has no package on disk; its export is what `export-model` writes, same weights hash.
    from predictor.embedding.model_package import default_spec, export_package

    with tempfile.TemporaryDirectory(prefix="image-search-bundled-") as package:
        return log(export_package(default_spec(), Path(package)))
