"""What `image-search eval --mlflow-uri` logs as `eval.` params, and what it refuses, through the real parser."""

import pytest

from predictor.cli import build_parser
from predictor.cli.mlflow_options import check_tracking_arguments, logged_options


def parse(*args: str):
    return build_parser().parse_args(["eval", "--labelled", "set", *args])


def test_only_what_bears_on_the_figures_is_logged():
    args = parse(
        "--min-precision", "0.9", "--report", "r.json", "--near-duplicates", "nd", "--url", "http://server:8080",
        "--cross-check", "cross", "--fit-set", "fit", "--fit-sample", "50", "--speed-rounds", "7",
        "--mlflow-uri", "http://mlflow:5000", "--experiment", "x",
    )  # fmt: skip
    conditions = {"mode": "served"}
    assert logged_options(args, conditions) == {"min_precision": 0.9, "min_recall": 0.0, "mode": "served"}


def test_the_conditions_measured_under_are_logged_as_measured():
    conditions = {"mode": "in-process", "device": "cpu", "precision": "fp32"}
    assert logged_options(parse("--device", "auto"), conditions) == {"min_precision": 0.0, "min_recall": 0.0,
                                                                     **conditions}  # fmt: skip


def test_an_option_comparison_with_tracking_is_refused_and_without_it_allowed():
    with pytest.raises(ValueError, match="--compare does not log to MLflow.*--model-dir PKG --mlflow-uri"):
        check_tracking_arguments(parse("--compare", "--fit-set", "fit", "--mlflow-uri", "http://mlflow:5000"))
    check_tracking_arguments(parse("--compare", "--fit-set", "fit"))
    check_tracking_arguments(parse("--mlflow-uri", "http://mlflow:5000"))
