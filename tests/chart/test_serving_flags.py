"""Serving settings in values reach `image-search serve` as its flags, and a timeout longer than the grace a stopping
pod gets is refused."""

import pytest
from chart_helpers import SCENARIOS, flags, one, predictors, server_container

SERVING = [s for s in SCENARIOS if s != "indexing-job"]


def serve_flags(docs: list[dict]) -> list[dict[str, str]]:
    return [flags(server_container(predictor)) for _, predictor in predictors(one(docs, "InferenceService"))]


@pytest.mark.parametrize("scenario", SERVING)
def test_every_predictor_times_requests_out_within_its_shutdown_grace(render, scenario):
    for given in serve_flags(render(scenario)):
        assert float(given["request-timeout-s"]) == 15
        assert float(given["request-timeout-s"]) <= float(given["shutdown-grace-seconds"])
        assert given["search-workers"] == "2"
        assert "namespace-header" not in given


def test_timeout_workers_and_namespace_header_follow_the_values(render):
    docs = render(
        "canary",
        "predictor.requestTimeoutSeconds=3",
        "predictor.searchWorkers=6",
        "predictor.namespaceHeader=X-Tenant",
    )
    for given in serve_flags(docs):
        assert (given["request-timeout-s"], given["search-workers"], given["namespace-header"]) == (
            "3",
            "6",
            "X-Tenant",
        )


def test_a_timeout_longer_than_the_shutdown_grace_is_refused(render):
    message = render.failure(None, "predictor.requestTimeoutSeconds=20")
    assert "predictor.requestTimeoutSeconds (20) exceeds predictor.drain.shutdownGraceSeconds (15)" in message
    assert render("cpu", "predictor.requestTimeoutSeconds=20", "predictor.drain.shutdownGraceSeconds=20")
