"""`image-search eval --mlflow-uri`: log the evaluation as an MLflow run once its report is on disk."""

import argparse
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_EXPERIMENT = "image-search"
# Options of `eval` that say where things are rather than how the model was scored.
_NOT_PARAMS = {
    "command",
    "handler",
    "log_level",
    "log_format",
    "mlflow_uri",
    "experiment",
    "report",
    "labelled",
    "model_dir",
    "near_duplicates",
}


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mlflow-uri",
        help="Log the evaluation as one run on this MLflow tracking server (needs the mlflow extra). Without it "
        "nothing is logged. A failure to log keeps the report and exits non-zero.",
    )
    parser.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT),
        help=f"MLflow experiment of the run, created if missing (default {DEFAULT_EXPERIMENT}). "
        "Env: MLFLOW_EXPERIMENT_NAME.",
    )


def track_evaluation(args: argparse.Namespace, report_path: Path, gate_passed: bool) -> int:
    """0 when nothing was asked or the run was logged; 2, with one line on stderr, when logging failed."""
    if not args.mlflow_uri:
        return 0
    from predictor.tracking.client import TrackingError, connect

    try:
        run = _log(args, report_path, gate_passed, connect(args.mlflow_uri))
    except (TrackingError, ValueError, OSError) as error:
        print(
            f"image-search eval: error: MLflow logging failed: {error}; the report is kept at {report_path}",
            file=sys.stderr,
        )
        return 2
    print(f"logged run {run.run_id} ({run.metrics} metrics) in experiment {args.experiment!r} at {args.mlflow_uri}")
    return 0


def _log(args: argparse.Namespace, report_path: Path, gate_passed: bool, client):
    from predictor.tracking.eval_runs import log_evaluation
    from predictor.tracking.eval_set import fingerprint

    options = {key: value for key, value in vars(args).items() if key not in _NOT_PARAMS}
    near_duplicates = getattr(args, "near_duplicates", None)
    eval_set = fingerprint(Path(args.labelled), Path(near_duplicates) if near_duplicates else None)

    def log(package: Path):
        return log_evaluation(client, args.experiment, report_path, package, eval_set, options, gate_passed)

    if args.model_dir:
        return log(Path(args.model_dir))
    # The bundled model has no package on disk; its export is what `export-model` writes, same weights hash.
    from predictor.model_package import default_spec, export_package

    with tempfile.TemporaryDirectory(prefix="image-search-bundled-") as package:
        return log(export_package(default_spec(), Path(package)))
