"""The request timeout: a request still waiting for the device or for Milvus is given up, answered 504 /
DEADLINE_EXCEEDED, and leaves nothing behind; a gRPC client's own deadline is honoured.

Through KServe's real REST app and gRPC server in process (tests/unit/conftest.py), with the device and the index
held up on purpose. The same against a real, stopped Milvus server is in tests/e2e/test_milvus_faults.py.
"""

import contextlib
import dataclasses
import threading
import time

import pytest
from prometheus_client import REGISTRY

from harness.polling import wait_for
from predictor.errors import RequestTimedOut
from predictor.serving.settings import ServeSettings
from tests.unit.conftest import COLOURS, serve_settings, solid_jpeg
from tests.unit.transports import TRANSPORTS, ask

RED, BLUE = solid_jpeg(COLOURS["red"]), solid_jpeg(COLOURS["blue"])
TIMEOUT_S = 0.3
# How much later than its deadline an answer may come on a shared machine.
SLACK_S = 2.0


def requests_counted(model, outcome: str) -> float:
    """The server's own count of its requests with this outcome, as Prometheus scrapes it."""
    labels = {"model": model.name, "model_version": model.version, "outcome": outcome}
    return REGISTRY.get_sample_value("image_search_requests_total", labels) or 0.0


def search_backlog(model) -> float | None:
    """The server's own count of queries waiting for Milvus, as Prometheus scrapes it."""
    labels = {"model": model.name, "model_version": model.version}
    return REGISTRY.get_sample_value("image_search_search_waiting_queries", labels)


def expected(transport: str) -> int | str:
    return RequestTimedOut.status.grpc if transport == "grpc" else RequestTimedOut.status.http


@contextlib.contextmanager
def request_timeout(server, seconds: float):
    model = server.search_model
    original = model.settings
    model.settings = dataclasses.replace(original, request_timeout_s=seconds)
    try:
        yield
    finally:
        model.settings = original


@contextlib.contextmanager
def stalled(event: threading.Event):
    event.clear()
    try:
        yield
    finally:
        event.set()


def timed(call) -> tuple[object, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_request_waiting_on_milvus_times_out_and_the_milvus_call_is_bounded_too(in_process_server, transport):
    server = in_process_server
    with request_timeout(server, TIMEOUT_S), stalled(server.index.answering):
        answer, took = timed(lambda: ask(server, transport, "image", [RED]))
    assert answer.status == expected(transport), answer
    assert "did not finish within 0.3 s (--request-timeout-s)" in answer.error
    assert TIMEOUT_S <= took < TIMEOUT_S + SLACK_S
    # The blocking Milvus call cannot be cancelled; it was given the request's deadline, so it ends by it as well.
    assert 0 < server.index.call_timeouts[-1] <= TIMEOUT_S
    assert search_backlog(server.search_model) == 0
    assert ask(server, transport, "image", [RED]).ok, "the server serves again once Milvus answers"


@pytest.mark.parametrize("transport", ["rest-v1", "grpc"])
def test_a_more_like_this_read_of_a_stalled_milvus_times_out(in_process_server, transport):
    server = in_process_server
    with request_timeout(server, TIMEOUT_S), stalled(server.index.answering):
        answer, took = timed(lambda: ask(server, transport, "id", ["red-id"]))
    assert answer.status == expected(transport), answer
    assert took < TIMEOUT_S + SLACK_S and 0 < server.index.call_timeouts[-1] <= TIMEOUT_S


@pytest.mark.parametrize("transport", ["rest-v2-binary", "grpc"])
def test_an_image_still_queued_for_the_device_at_the_timeout_is_dropped_and_never_embedded(
    in_process_server, transport
):
    server, backbone = in_process_server, in_process_server.backbone
    answers = {}

    def send(name: str, image: bytes) -> None:
        answers[name] = ask(server, transport, "image", [image])

    with request_timeout(server, TIMEOUT_S):
        embedded_before = sum(backbone.batches)
        with stalled(backbone.free):
            first = threading.Thread(target=send, args=("running", RED))
            first.start()
            wait_for(
                lambda: sum(backbone.batches) > embedded_before,
                timeout_s=10,
                what="the first batch to start",
                interval_s=0.01,
            )
            queued = threading.Thread(target=send, args=("queued", BLUE))
            queued.start()
            first.join(TIMEOUT_S + SLACK_S + 5)
            queued.join(TIMEOUT_S + SLACK_S + 5)
        assert {name: answer.status for name, answer in answers.items()} == {
            "running": expected(transport),
            "queued": expected(transport),
        }
        assert ask(server, transport, "image", [RED]).ok
    # One image for the batch that was running, one for the request after: the queued image was never embedded.
    assert sum(backbone.batches) - embedded_before == 2


def test_a_grpc_client_deadline_shorter_than_the_server_timeout_is_honoured(in_process_server):
    server = in_process_server
    assert server.search_model.settings.request_timeout_s >= 30
    model = server.search_model
    before = {outcome: requests_counted(model, outcome) for outcome in ("cancelled", "internal", "timeout")}
    with stalled(server.index.answering):
        answer, _ = timed(lambda: ask(server, "grpc", "image", [RED], grpc_timeout=TIMEOUT_S))
        # The client's own deadline makes its answer DEADLINE_EXCEEDED whatever the server does; what the server did
        # is in its own account: it gave up at that deadline and counted the request as its client's, not its error.
        wait_for(
            lambda: requests_counted(model, "cancelled") > before["cancelled"],
            timeout_s=TIMEOUT_S + SLACK_S,
            what="the server to give the request up at the client's deadline",
            interval_s=0.01,
        )
    assert answer.status == "DEADLINE_EXCEEDED"
    assert 0 < server.index.call_timeouts[-1] <= TIMEOUT_S, "the server gave Milvus the client's deadline"
    assert requests_counted(model, "internal") == before["internal"]
    assert requests_counted(model, "timeout") == before["timeout"]
    wait_for(
        lambda: search_backlog(model) == 0,
        timeout_s=5,
        what="the search queue to empty",
        interval_s=0.01,
    )


def test_the_server_timeout_wins_over_a_longer_grpc_client_deadline(in_process_server):
    server = in_process_server
    with request_timeout(server, TIMEOUT_S), stalled(server.index.answering):
        answer, took = timed(lambda: ask(server, "grpc", "image", [RED], grpc_timeout=30))
    assert answer.status == "DEADLINE_EXCEEDED" and "--request-timeout-s" in answer.error
    assert took < TIMEOUT_S + SLACK_S


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"request_timeout_s": 0}, "--request-timeout-s must be above 0"),
        ({"request_timeout_s": -1}, "--request-timeout-s must be above 0"),
        ({"request_timeout_s": 7200, "shutdown_grace_s": 3600}, "at most 3600"),
        ({"request_timeout_s": 40}, "--shutdown-grace-seconds 30 is shorter than --request-timeout-s 40"),
    ],
)
def test_a_timeout_that_cannot_work_is_refused_at_start_saying_what_to_change(overrides, problem):
    with pytest.raises(ValueError, match=problem):
        serve_settings(**overrides)


def test_the_default_timeout_fits_the_default_grace():
    settings = serve_settings()
    assert isinstance(settings, ServeSettings) and settings.request_timeout_s <= settings.shutdown_grace_s
