"""`image-search eval` of a CLIP package scores text -> image as well, and logs those figures to MLflow with the rest.

The package is a tiny open_clip model with random weights: the figures are whatever it scores, checked against the
same figures computed here from open_clip's own embeddings."""

import json
import shutil
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from harness.clip_models import make_package, open_clip_model
from harness.predictor_server import run_cli
from tests.e2e.test_model_registry import CATEGORIES, experiment_id


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    full = tmp_path_factory.mktemp("labelled-full")
    ok(run_cli("sample-catalogue", "--labelled", "--out", str(full)))
    small = tmp_path_factory.mktemp("labelled")
    for category in CATEGORIES:
        shutil.copytree(full / category, small / category)
    return small


def expected_scores(package, labelled, template: str) -> dict[str, float]:
    """Text -> image p@1, p@5 and mAP@10 from open_clip's embeddings, computed without the project's code."""
    model, preprocess, tokenizer = open_clip_model(package)
    files = sorted((category.name, path) for category in labelled.iterdir() for path in sorted(category.iterdir()))
    labels = np.array([name for name, _ in files])
    categories = sorted(set(labels))
    with torch.no_grad():
        images = model.encode_image(torch.stack([preprocess(Image.open(p)) for _, p in files]), normalize=True)
        texts = model.encode_text(tokenizer([template.format(category=c) for c in categories]), normalize=True)
    order = torch.argsort(texts @ images.T, dim=1, descending=True).numpy()
    p1, p5, ap = [], [], []
    for row, category in enumerate(categories):
        hits = labels[order[row]] == category
        relevant = int(hits.sum())
        p1.append(hits[0])
        p5.append(hits[: min(5, relevant)].mean())
        top = hits[:10]
        ap.append((np.cumsum(top) / np.arange(1, len(top) + 1) * top).sum() / min(10, relevant))
    return {"precision_at_1": np.mean(p1), "precision_at_5": np.mean(p5), "map_at_10": np.mean(ap)}


def test_eval_of_a_clip_package_scores_text_to_image_and_logs_it(mlflow_server, labelled, tmp_path):
    package = make_package(tmp_path / "clip")
    experiment = f"text-{uuid.uuid4().hex[:8]}"
    report_path = tmp_path / "report.json"
    template = "a picture of {category}"
    printed = ok(
        run_cli(
            "eval",
            "--labelled",
            str(labelled),
            "--model-dir",
            str(package),
            "--text-template",
            template,
            "--report",
            str(report_path),
            "--mlflow-uri",
            mlflow_server.url,
            "--experiment",
            experiment,
            "--device",
            "cpu",
            "--precision",
            "fp32",
        )
    )
    assert "text -> image" in printed and "logged run" in printed
    scores = json.loads(report_path.read_text())["scores"]["text_to_image"]
    assert scores["template"] == template and scores["queries"] == len(CATEGORIES)
    expected = expected_scores(package, labelled, template)
    # The server's resize is not open_clip's; with random weights a near-tie may swap, so allow one swapped hit.
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, abs=1 / len(CATEGORIES) / 5 + 1e-9), name
    (run,) = mlflow_server.client().search_runs([experiment_id(mlflow_server, experiment)])
    for name in ("precision_at_1", "precision_at_5", "map_at_10"):
        assert run.data.metrics[f"text_to_image.{name}"] == pytest.approx(scores[name])
    assert run.data.params["report.scores.text_to_image.template"] == template


def test_a_text_template_without_its_placeholder_is_refused_before_any_work(labelled, tmp_path):
    result = run_cli("eval", "--labelled", str(labelled), "--text-template", "a photo", "--report", str(tmp_path / "r"))
    assert result.returncode == 2 and "--text-template must hold {category}" in result.stderr
