"""What an evaluation run records and where a registered package is fetched from: the rules, without MLflow."""

import math

import pytest

from predictor.registry.run_fields import UntrackableReport, flat_params, split_report
from predictor.registry.storage_uri import ModelReference, UnservableLocation, parse_model_uri, storage_uri

CATEGORIES = {"brick", "moon"}


def test_measures_are_metrics_by_path_and_the_rest_of_the_report_is_params():
    report = {
        "model": "efficientnet-lite0:2 (1280-d)",
        "k": 5,
        "mean_precision_at_k": 0.75,
        "precision_at_k": {"brick": 1.0, "moon": 0.5},
        "near_duplicate": {"recall_at_1": 0.9, "passed": True},
        "notes": ["text", 3],
    }
    fields = split_report(report, CATEGORIES)
    assert fields.metrics == {
        "mean_precision_at_k": 0.75,
        "precision_at_k.brick": 1.0,
        "precision_at_k.moon": 0.5,
        "near_duplicate.recall_at_1": 0.9,
    }
    assert fields.params == {
        "report.model": "efficientnet-lite0:2 (1280-d)",
        "report.k": "5",
        "report.near_duplicate.passed": "True",
        "report.notes": '["text",3]',
    }


def test_a_scores_section_holds_the_metrics_and_the_model_description_stays_params():
    report = {
        "model": "efficientnet-lite0:2 (1280-d)",
        "spec": {"embedding_dim": 1280, "crop_size": 224, "mean": [0.485, 0.456, 0.406], "projection": None},
        "scores": {
            "images": 34,
            "precision_at_1": 0.97,
            "map_at_10": 0.95,
            "precision_at_5_by_category": {"brick": 1.0, "moon": 0.9},
        },
    }
    fields = split_report(report, CATEGORIES)
    assert fields.metrics == {"precision_at_1": 0.97, "map_at_10": 0.95, "precision_at_5.brick": 1.0,
                              "precision_at_5.moon": 0.9}  # fmt: skip
    assert fields.params == {
        "report.model": "efficientnet-lite0:2 (1280-d)",
        "report.spec.embedding_dim": "1280",
        "report.spec.crop_size": "224",
        "report.spec.mean": "[0.485,0.456,0.406]",
        "report.scores.images": "34",
    }


def test_measures_grouped_by_category_are_named_measure_then_category():
    report = {"by_category": {"brick": {"p_at_1": 1.0, "p_at_5": 0.8}, "moon": {"p_at_1": 0.5, "p_at_5": 0.6}}}
    assert split_report(report, CATEGORIES).metrics == {
        "p_at_1.brick": 1.0,
        "p_at_5.brick": 0.8,
        "p_at_1.moon": 0.5,
        "p_at_5.moon": 0.6,
    }


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_is_refused_by_name(bad):
    with pytest.raises(UntrackableReport, match=r"metric 'precision_at_k.moon' is .*nothing was logged"):
        split_report({"precision_at_k": {"brick": 1.0, "moon": bad}}, CATEGORIES)
    with pytest.raises(UntrackableReport, match=r"metric 'scores_mean' is "):
        split_report({"scores_mean": bad}, CATEGORIES)


def test_a_missing_value_or_category_is_refused():
    with pytest.raises(UntrackableReport, match=r"'mean_precision_at_k' has no value"):
        split_report({"mean_precision_at_k": None}, CATEGORIES)
    with pytest.raises(UntrackableReport, match=r"'precision_at_k.moon' has no value"):
        split_report({"precision_at_k": {"brick": 1.0, "moon": None}}, CATEGORIES)
    with pytest.raises(
        UntrackableReport, match=r"'scores.precision_at_5_by_category' has no value for category 'moon'"
    ):
        split_report({"scores": {"precision_at_5_by_category": {"brick": 1.0}}}, CATEGORIES)


def test_a_name_mlflow_refuses_is_caught_before_logging():
    with pytest.raises(UntrackableReport, match=r"metric name 'precision_at_k.cats@home' is not one MLflow accepts"):
        split_report({"precision_at_k": {"cats@home": 1.0}}, {"cats@home"})


def test_model_json_becomes_params_by_dotted_path():
    manifest = {
        "name": "efficientnet-lite0",
        "embedding_dim": 1280,
        "preprocessing": {"crop_size": 224, "mean": [0.485, 0.456, 0.406], "mode": "letterbox"},
        "projection": {"dimension": 256, "sha256": "ab"},
        "precision": "fp16",
        "pooling": None,
    }
    assert flat_params("model", manifest) == {
        "model.name": "efficientnet-lite0",
        "model.embedding_dim": "1280",
        "model.preprocessing.crop_size": "224",
        "model.preprocessing.mean": "[0.485,0.456,0.406]",
        "model.preprocessing.mode": "letterbox",
        "model.projection.dimension": "256",
        "model.projection.sha256": "ab",
        "model.precision": "fp16",
    }


@pytest.mark.parametrize(
    ("location", "destination", "expected"),
    [
        ("s3://models/mlartifacts/1/r/artifacts/model-package", None, "s3://models/mlartifacts/1/r/artifacts/model-package"),
        ("gs://bucket/p/", None, "gs://bucket/p"),
        ("wasbs://models@acct.blob.core.windows.net/1/r/artifacts/model-package", None,
         "https://acct.blob.core.windows.net/models/1/r/artifacts/model-package"),
        ("/srv/mlruns/1/r/artifacts/model-package", None, "file:///srv/mlruns/1/r/artifacts/model-package"),
        ("file:///srv/mlruns/1/r", None, "file:///srv/mlruns/1/r"),
        ("mlflow-artifacts:/1/r/artifacts/model-package", "s3://models/mlartifacts/",
         "s3://models/mlartifacts/1/r/artifacts/model-package"),
        ("mlflow-artifacts://mlflow:5000/1/r/artifacts/model-package", "pvc://mlflow-artifacts",
         "pvc://mlflow-artifacts/1/r/artifacts/model-package"),
        ("mlflow-artifacts:/1/r", "/srv/mlartifacts", "file:///srv/mlartifacts/1/r"),
    ],
)  # fmt: skip
def test_artifact_locations_map_to_the_storage_uri_kserve_fetches(location, destination, expected):
    assert storage_uri(location, destination) == expected


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("mlflow-artifacts:/1/r/artifacts/model-package", "--artifacts-destination"),
        ("https://mlflow.example.com/get-artifact?path=x", "single file"),
        ("dbfs:/databricks/mlflow/1/r", "cannot fetch dbfs"),
    ],
)
def test_locations_kserve_cannot_fetch_say_what_to_do_instead(location, reason):
    with pytest.raises(UnservableLocation, match=reason):
        storage_uri(location)


def test_model_uris_name_an_alias_or_a_version():
    assert parse_model_uri("models:/image-search@challenger") == ModelReference("image-search", alias="challenger")
    assert parse_model_uri("models:/image-search/3") == ModelReference("image-search", version="3")
    assert str(ModelReference("image-search", version="3")) == "models:/image-search/3"
    for bad in ("models:/image-search", "runs:/abc/model", "models:/image-search/latest", "image-search@champion"):
        with pytest.raises(ValueError, match="models:/NAME@ALIAS or models:/NAME/VERSION"):
            parse_model_uri(bad)
