"""The search page in the chart: off unless ui.enabled, its flags ones `image-search serve` takes, its values checked by
the schema and documented, and nothing else about the pod (network policy, security context) changed by it."""

import pytest
from chart_helpers import REPO, SCENARIOS, of_kind, one, pod_specs, predictors, server_container

cli = pytest.importorskip("predictor.cli", reason="the predictor package is not installed")
from predictor.cli.options import ui_settings  # noqa: E402
from predictor.ui.settings import BaseUrl, UiSettings  # noqa: E402

CANARY = ("canary.enabled=true", "canary.storageUri=s3://models/2", "canary.version=2")
UI_FLAGS = ("--ui", "--thumbnail-")


def page_settings(predictor: dict) -> UiSettings:
    return ui_settings(cli.build_parser().parse_args(["serve", *server_container(predictor)["args"]]))


@pytest.mark.parametrize("scenario", [None, *(s for s in SCENARIOS if s not in ("search-page", "indexing-job"))])
def test_the_page_is_off_unless_ui_is_enabled(render, scenario):
    for name, predictor in predictors(one(render(scenario), "InferenceService")):
        args = server_container(predictor)["args"]
        assert not [arg for arg in args if arg.startswith(UI_FLAGS)], name
        assert page_settings(predictor).enabled is False, name


def test_ui_enabled_serves_the_page_on_stable_and_canary_with_the_thumbnail_settings(render):
    docs = render("search-page", *CANARY, "ui.thumbnails.cacheBytes=0")
    expected = UiSettings(
        enabled=True,
        thumbnail_size=320,
        thumbnail_cache_bytes=0,
        base_urls=(BaseUrl("s3://catalogue/images/", "https://images.example.com/catalogue/"),),
    )
    found = dict(predictors(one(docs, "InferenceService")))
    assert set(found) == {"stable", "canary canary"}
    for name, predictor in found.items():
        assert page_settings(predictor) == expected, name


def test_the_defaults_of_the_values_are_the_servers(render):
    (_, predictor), *_ = predictors(one(render(None, "ui.enabled=true"), "InferenceService"))
    assert page_settings(predictor) == UiSettings(enabled=True)


def test_the_page_changes_neither_the_network_policy_nor_the_security_context(render):
    def pod_security(docs):
        return [
            (name, pod.get("securityContext"), [c.get("securityContext") for c in pod["containers"]])
            for doc in docs
            for name, pod in pod_specs(doc)
        ]

    for scenario in ("cpu", "canary"):
        plain, with_page = render(scenario), render(scenario, "ui.enabled=true")
        assert of_kind(with_page, "NetworkPolicy") == of_kind(plain, "NetworkPolicy"), scenario
        assert pod_security(with_page) == pod_security(plain), scenario


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("ui.enabled=yes", "enabled"),
        ("ui.thumbnails.size=8", "size"),
        ("ui.thumbnails.cacheBytes=-1", "cacheBytes"),
        ("ui.thumbnails.baseUrls[0].prefix=s3://a=b/", "prefix"),
        ("ui.thumbnails.baseUrls[0].url=https://cdn.example.com/?sig=1", "url"),
        ("ui.thumbnails.baseUrls[0].url=cdn.example.com/images/", "url"),
        ("ui.port=8082", "additional properties"),
    ],
)
def test_the_schema_refuses_page_values_that_cannot_work(render, setting, reason):
    settings = [setting]
    if "baseUrls[0].url" in setting:
        settings.append("ui.thumbnails.baseUrls[0].prefix=s3://a/")
    if "baseUrls[0].prefix" in setting:
        settings.append("ui.thumbnails.baseUrls[0].url=https://cdn.example.com/")
    assert reason in render.failure(None, *settings).replace("Additional", "additional")


def test_the_page_values_are_documented():
    guide = (REPO / "docs" / "kubernetes.md").read_text()
    for key in ("ui.enabled", "ui.thumbnails.size", "ui.thumbnails.cacheBytes", "ui.thumbnails.baseUrls"):
        assert f"`{key}`" in guide, f"docs/kubernetes.md does not explain {key}"
