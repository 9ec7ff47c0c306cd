"""SIGTERM drains: readiness turns false at once, requests keep being served through the pause, requests in flight
finish, and the process exits 0.

The requests go to the classifier, which needs no index, so the server needs no Milvus collection of its own.
"""

import base64
import signal
import threading
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from harness.predictor_server import run_predictor

# Its clients must get answers within a 4 s window: a second pytest worker beside it can starve the server of that.
pytestmark = pytest.mark.serial
PAUSE_S = 4.0
GRACE_S = 20.0
# Clients stop sending a little before the pause ends, as they do once endpoints have been updated.
SENDING_STOPS_BEFORE_PAUSE_ENDS_S = 0.5
MODEL = "image-classifier"


@dataclass
class Sent:
    transport: str
    sent_at: float
    done_at: float = 0.0
    outcome: str = ""


@dataclass
class Probe:
    at: float
    ready: int | str
    live: int | str


@pytest.fixture
def draining_server(tmp_path):
    with run_predictor(
        str(tmp_path / "empty.db"),
        tmp_path,
        "--drain-seconds",
        str(PAUSE_S),
        "--shutdown-grace-seconds",
        str(GRACE_S),
        "--request-timeout-s",
        str(GRACE_S),
        wait_for="/v2/health/live",
    ) as server:
        yield server


def rest_body(photo: bytes, images: int) -> dict:
    data = [base64.b64encode(photo).decode()] * images
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [images], "data": data}]}


def test_sigterm_drains_without_failing_a_request(draining_server, catalogue):
    server = draining_server
    url = f"{server.http_url}/v2/models/{MODEL}/infer"
    photo = catalogue.photos["astronaut"].read_bytes()
    body = rest_body(photo, 8)
    assert httpx.post(url, json=body, timeout=60).status_code == 200
    assert httpx.get(f"{server.http_url}/v2/models/{MODEL}/ready").status_code == 200

    requests: list[Sent] = []
    probes: list[Probe] = []
    lock = threading.Lock()
    stop_sending = threading.Event()
    stop_probing = threading.Event()

    def record(request: Sent, outcome: str) -> None:
        request.done_at, request.outcome = time.monotonic(), outcome
        with lock:
            requests.append(request)

    def rest_client() -> None:
        while not stop_sending.is_set():
            request = Sent("rest", time.monotonic())
            try:
                # A connection per request, so that none is an idle keep-alive the server may close under us.
                response = httpx.post(url, json=body, headers={"Connection": "close"}, timeout=60)
                record(request, str(response.status_code))
            except httpx.HTTPError as error:
                record(request, type(error).__name__)

    def grpc_client() -> None:
        # A real gRPC client keeps its channel open across requests.
        client = grpcclient.InferenceServerClient(server.grpc_address)
        tensor = grpcclient.InferInput("image", [4], "BYTES")
        tensor.set_data_from_numpy(np.array([photo] * 4, dtype=np.object_))
        while not stop_sending.is_set():
            request = Sent("grpc", time.monotonic())
            try:
                client.infer(MODEL, [tensor])
                record(request, "200")
            except Exception as error:  # noqa: BLE001 - every failure is counted and shown
                record(request, f"{type(error).__name__}: {error}"[:200])
        client.close()

    def prober() -> None:
        with httpx.Client(timeout=2) as client:
            while not stop_probing.is_set():
                at = time.monotonic()
                try:
                    ready = client.get(f"{server.http_url}/v2/models/{MODEL}/ready").status_code
                    live = client.get(f"{server.http_url}/v2/health/live").status_code
                except httpx.HTTPError as error:
                    ready = live = type(error).__name__
                probes.append(Probe(at, ready, live))
                time.sleep(0.1)  # the probe period, not a synchronisation

    # Once every client has been answered once, one big request that is certainly still running at the signal.
    straggler = Sent("rest", 0.0)

    def send_straggler() -> None:
        straggler.sent_at = time.monotonic()
        record(straggler, str(httpx.post(url, json=rest_body(photo, 64), timeout=120).status_code))

    # The steady clients may each be inside one long request for the whole pause on a busy machine, so two more send
    # right after the signal, one over a gRPC channel opened before it and one over a new connection: what clients do
    # until their endpoint lists are updated.
    signalled = threading.Event()
    late_client = grpcclient.InferenceServerClient(server.grpc_address)
    assert late_client.is_model_ready(MODEL)
    late_tensor = grpcclient.InferInput("image", [1], "BYTES")
    late_tensor.set_data_from_numpy(np.array([photo], dtype=np.object_))

    def send_after_signal(transport: str) -> None:
        signalled.wait()
        request = Sent(transport, time.monotonic())
        try:
            if transport == "grpc":
                late_client.infer(MODEL, [late_tensor])
                record(request, "200")
            else:
                response = httpx.post(url, json=rest_body(photo, 1), headers={"Connection": "close"}, timeout=60)
                record(request, str(response.status_code))
        except Exception as error:  # noqa: BLE001 - every failure is counted and shown
            record(request, f"{type(error).__name__}: {error}"[:200])

    late_senders = [threading.Thread(target=send_after_signal, args=(t,)) for t in ("grpc", "rest")]
    straggler_thread = threading.Thread(target=send_straggler)
    clients = [threading.Thread(target=rest_client) for _ in range(3)] + [threading.Thread(target=grpc_client)]
    probe_thread = threading.Thread(target=prober)
    for thread in [*clients, *late_senders, probe_thread]:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len({r.transport for r in requests}) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        straggler_thread.start()
        time.sleep(0.2)  # lets the straggler's request reach the server; it takes seconds to answer
        signalled_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        signalled.set()
        pause_ends = signalled_at + PAUSE_S
        time.sleep(PAUSE_S - SENDING_STOPS_BEFORE_PAUSE_ENDS_S)  # the clients' sending window, not a synchronisation
        stop_sending.set()
        for thread in [straggler_thread, *late_senders, *clients]:
            thread.join(timeout=120)
        exit_code = server.process.wait(timeout=GRACE_S + 30)
        exited_at = time.monotonic()
    finally:
        signalled.set()
        stop_sending.set()
        stop_probing.set()
        probe_thread.join(timeout=10)
        late_client.close()

    failed = [r for r in requests if r.outcome != "200"]
    in_flight_at_signal = [r for r in requests if r.sent_at < signalled_at < r.done_at]
    during_pause = [r for r in requests if signalled_at <= r.sent_at]
    in_flight_at_close = [r for r in requests if r.sent_at < pause_ends < r.done_at]
    print(
        f"\ndrain: {len(in_flight_at_signal)} requests in flight at SIGTERM, {len(during_pause)} sent during the "
        f"{PAUSE_S:.0f} s pause ({sum(r.transport == 'grpc' for r in during_pause)} over gRPC), "
        f"{len(in_flight_at_close)} still in flight when it ended; {len(failed)} failed; "
        f"exit {exit_code} {exited_at - pause_ends:.1f} s after the pause"
    )
    assert not failed, [(r.transport, round(r.sent_at - signalled_at, 2), r.outcome) for r in failed[:10]]
    assert straggler in in_flight_at_signal
    sent_in_pause = [r for r in during_pause if r.sent_at < pause_ends]
    assert {r.transport for r in sent_in_pause} == {"grpc", "rest"}, "a request sent in the pause went unanswered"
    assert exit_code == 0

    after_signal = [p for p in probes if signalled_at + 0.2 < p.at < pause_ends - 0.2]
    assert after_signal, "no readiness probe ran during the pause"
    assert all(p.ready == 503 for p in after_signal), [(round(p.at - signalled_at, 2), p.ready) for p in after_signal]
    assert all(p.live == 200 for p in after_signal), "liveness must hold while draining"
    first_unready = min(p.at for p in probes if p.ready == 503)
    assert first_unready - signalled_at < 0.5, "readiness did not turn false at once"
    assert "drain pause over" in server.log()
