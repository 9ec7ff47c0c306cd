"""A stopping predictor pod drains: a preStop pause inside the grace period, then the server's own graceful stop."""

import pytest
from chart_helpers import SCENARIOS, flags, one, predictors, server_container

STANDARD = [s for s in SCENARIOS if s not in ("knative", "indexing-job")]


def pre_stop_seconds(container: dict) -> float | None:
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return None
    command = hook["exec"]["command"]
    assert command[:2] == ["python", "-c"] and command[2].startswith("import time; time.sleep(")
    return float(command[2].removeprefix("import time; time.sleep(").removesuffix(")"))


@pytest.mark.parametrize("scenario", STANDARD)
def test_standard_predictors_pause_before_sigterm_and_finish_requests_within_the_grace_period(render, scenario):
    for name, predictor in predictors(one(render(scenario), "InferenceService")):
        container = server_container(predictor)
        pause = pre_stop_seconds(container)
        grace = float(flags(container)["shutdown-grace-seconds"])
        assert pause == 10 and grace == 15, name
        assert pause + grace <= predictor["terminationGracePeriodSeconds"], name


def test_knative_leaves_the_drain_to_its_queue_proxy(render):
    (_, predictor), *_ = predictors(one(render("knative"), "InferenceService"))
    container = server_container(predictor)
    assert "lifecycle" not in container
    assert float(flags(container)["shutdown-grace-seconds"]) <= predictor["timeout"]


def test_pause_and_grace_follow_the_values(render):
    docs = render(
        "cpu",
        "predictor.drain.preStopSeconds=25",
        "predictor.drain.shutdownGraceSeconds=30",
        "predictor.terminationGracePeriodSeconds=60",
    )
    (_, predictor), *_ = predictors(one(docs, "InferenceService"))
    container = server_container(predictor)
    assert (pre_stop_seconds(container), flags(container)["shutdown-grace-seconds"]) == (25, "30")
    assert predictor["terminationGracePeriodSeconds"] == 60


def test_no_pause_when_it_is_zero(render):
    (_, predictor), *_ = predictors(one(render("cpu", "predictor.drain.preStopSeconds=0"), "InferenceService"))
    assert "lifecycle" not in server_container(predictor)


def test_request_size_limit_is_passed_only_when_set(render):
    (_, default), *_ = predictors(one(render("cpu"), "InferenceService"))
    assert "max-request-bytes" not in flags(server_container(default))
    (_, limited), *_ = predictors(one(render("cpu", "predictor.maxRequestBytes=33554432"), "InferenceService"))
    assert flags(server_container(limited))["max-request-bytes"] == "33554432"
