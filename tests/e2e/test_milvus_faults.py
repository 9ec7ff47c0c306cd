"""A Milvus server that wants a token, then stalls, then dies: the token is read from the environment and never shows
up anywhere, searches fail by the request timeout during a stall while liveness answers throughout, and every error
on the way is clean.

The tests share one Milvus server and run in file order: the last ones kill it.
"""

import base64
import json
import secrets
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from pymilvus import MilvusClient
from tritonclient.utils import InferenceServerException

from harness import raw_http
from harness.milvus_server import DEFAULT_ROOT_TOKEN, kill_milvus_server, paused_milvus_server, run_milvus_server
from harness.polling import wait_for
from harness.predictor_server import RunningServer, run_cli, run_predictor
from harness.tcp_forwarder import reserved_port
from predictor.errors import RequestTimedOut
from predictor.index.milvus import MilvusAccess

SECRET = f"Tok-{secrets.token_hex(12)}"
TOKEN = f"root:{SECRET}"
LIVENESS_BUDGET_S = 1.0
# Short, so the stall stays well inside the 10 s session TTL of the test Milvus (a longer SIGSTOP expires its etcd
# sessions and it does not come back).
REQUEST_TIMEOUT_S = 2.0
# How much later than the timeout a refusal may arrive on a shared machine.
SLACK_S = 3.0
CLIENT_DEADLINE_S = 1.0


@pytest.fixture(scope="module")
def secured_milvus(tmp_path_factory, catalogue):
    with run_milvus_server(tmp_path_factory.mktemp("secured-milvus"), authentication=True) as uri:
        client = MilvusClient(uri=uri, token=DEFAULT_ROOT_TOKEN)
        client.update_password("root", DEFAULT_ROOT_TOKEN.split(":", 1)[1], SECRET)
        client.close()
        yield uri


@pytest.fixture(scope="module")
def photo(catalogue) -> bytes:
    return catalogue.photos["coffee"].read_bytes()


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    """Every response body and command output the tests see, scanned for secrets at the end."""
    return []


def v1(image: bytes) -> dict:
    return {"instances": [{"image": {"b64": base64.b64encode(image).decode()}}]}


def test_milvus_token_comes_from_the_environment(secured_milvus, catalogue, outputs):
    photos = [str(catalogue.photos[name]) for name in ("coffee", "chelsea", "rocket")]
    indexed = run_cli("index", *photos, "--milvus-uri", secured_milvus, env={"MILVUS_TOKEN": TOKEN})
    assert indexed.returncode == 0, indexed.stderr
    for token in ("root:wrong-password", ""):
        refused = run_cli("collections", "--milvus-uri", secured_milvus, env={"MILVUS_TOKEN": token})
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 2 and "cannot connect to Milvus" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def server(secured_milvus, tmp_path_factory) -> RunningServer:
    with run_predictor(
        secured_milvus,
        tmp_path_factory.mktemp("predictor"),
        "--request-timeout-s",
        str(REQUEST_TIMEOUT_S),
        "--ui",
        env={"MILVUS_TOKEN": TOKEN},
    ) as running:
        yield running


def served_outcomes(server: RunningServer) -> dict[str, float]:
    """The server's own count of search requests by outcome, from its /metrics."""
    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "image_search_requests_total" and sample.labels.get("model") == "image-search"
    }


def grpc_search(server: RunningServer, photo: bytes, timeout_s: float | None = None) -> tuple[str, str]:
    """The status code name and message of one gRPC search ("OK" when it succeeds)."""
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo], dtype=np.object_))
    try:
        client.infer("image-search", [tensor], client_timeout=timeout_s)
    except InferenceServerException as error:
        return str(error.status()).removeprefix("StatusCode."), error.message()
    finally:
        client.close()
    return "OK", ""


def test_searches_fail_by_the_timeout_while_milvus_is_stalled_and_liveness_answers_throughout(
    server, secured_milvus, photo, outputs
):
    search = f"{server.http_url}/v1/models/image-search:predict"
    assert httpx.post(search, json=v1(photo), timeout=60).status_code == 200
    answers: dict[str, tuple] = {}
    counted_before = served_outcomes(server)

    def rest_search() -> None:
        started = time.monotonic()
        response = httpx.post(search, json=v1(photo), timeout=60)
        answers["REST"] = (response.status_code, time.monotonic() - started, response.text)

    def grpc(name: str, deadline_s: float | None) -> None:
        started = time.monotonic()
        status, message = grpc_search(server, photo, deadline_s)
        answers[name] = (status, time.monotonic() - started, message)

    def thumbnail() -> None:
        started = time.monotonic()
        response = httpx.get(f"{server.http_url}/ui/thumbnail", params={"id": "any"}, timeout=60)
        answers["search page thumbnail"] = (response.status_code, time.monotonic() - started, response.text)

    searches = [
        threading.Thread(target=rest_search),
        threading.Thread(target=thumbnail),
        threading.Thread(target=grpc, args=("gRPC", None)),
        threading.Thread(target=grpc, args=("gRPC, client deadline", CLIENT_DEADLINE_S)),
    ]
    liveness, readiness = [], []
    with paused_milvus_server(secured_milvus), httpx.Client(timeout=10) as probe:
        for searcher in searches:
            searcher.start()
        stalled_until = time.monotonic() + REQUEST_TIMEOUT_S + SLACK_S
        while time.monotonic() < stalled_until and (any(t.is_alive() for t in searches) or 503 not in readiness):
            started = time.monotonic()
            assert probe.get(f"{server.http_url}/v2/health/live").status_code == 200
            liveness.append(time.monotonic() - started)
            readiness.append(probe.get(f"{server.http_url}/v2/models/image-search/ready").status_code)
            time.sleep(0.2)  # the probe period, not a synchronisation
        still_waiting = [t for t in searches if t.is_alive()]
    for searcher in searches:
        searcher.join(timeout=60)
    outputs.extend(str(answer[2]) for answer in answers.values())
    print(
        f"\nwhile Milvus was stalled: liveness answered {len(liveness)} probes, slowest {max(liveness) * 1000:.0f} ms"
    )
    for name, (status, took, message) in answers.items():
        print(f"  {name}: {status} after {took:.2f} s: {message[:160]}")
    print(f"  readiness: {readiness}")
    assert not still_waiting, f"searches still waiting on the stalled Milvus after the timeout: {answers}"
    assert max(liveness) < LIVENESS_BUDGET_S
    rest_status, rest_took, _ = answers["REST"]
    assert rest_status in (504, 503) and rest_took < REQUEST_TIMEOUT_S + SLACK_S, answers["REST"]
    grpc_status, grpc_took, _ = answers["gRPC"]
    assert grpc_status in ("DEADLINE_EXCEEDED", "UNAVAILABLE") and grpc_took < REQUEST_TIMEOUT_S + SLACK_S
    thumbnail_status, thumbnail_took, _ = answers["search page thumbnail"]
    assert thumbnail_status == 504 and thumbnail_took < REQUEST_TIMEOUT_S + SLACK_S, answers["search page thumbnail"]
    # The client's own deadline makes its answer DEADLINE_EXCEEDED whatever the server does: the server's account
    # says what it did, counting that search as given up by its client, not as one of its errors.
    counted = served_outcomes(server)
    assert counted["cancelled"] >= counted_before["cancelled"] + 1, counted
    assert counted["internal"] == counted_before["internal"], counted
    assert 503 in readiness, "readiness never noticed the stalled Milvus"
    # Once Milvus answers again, so does the server, on both transports.
    wait_for(lambda: httpx.post(search, json=v1(photo), timeout=60).status_code == 200, 60, "REST searches again")
    assert grpc_search(server, photo, 60)[0] == "OK"
    wait_for(
        lambda: httpx.get(f"{server.http_url}/v2/models/image-search/ready", timeout=10).status_code == 200,
        30,
        "readiness again",
        interval_s=0.2,
    )


def test_a_batch_command_s_milvus_call_that_is_never_answered_fails_by_its_timeout(server, secured_milvus):
    """Indexing, sync and duplicates make Milvus calls with no request deadline: each is still bounded (the
    `--milvus-timeout-s` every command takes), so a Milvus that never answers fails the Job's pod, whose retry
    resumes, instead of holding it for ever."""
    access = MilvusAccess(secured_milvus, TOKEN, call_timeout_s=1.0)
    collections = access.list_collections()
    assert collections, "the server's collection exists before the stall"
    with paused_milvus_server(secured_milvus):
        started = time.monotonic()
        with pytest.raises(RequestTimedOut, match=r"Milvus count on .* did not answer within 1 s"):
            access.count(collections[0])
        took = time.monotonic() - started
    assert took < 1.0 + SLACK_S, f"the call gave up after {took:.1f} s"
    wait_for(lambda: access.count(collections[0]) >= 0, 30, "Milvus answers again", interval_s=0.2)
    access.close()


BAD_REQUESTS = {
    "truncated image": lambda photo: v1(photo[: len(photo) // 2]),
    "not an image": lambda photo: v1(b"GIF89a" + photo[100:2000]),
    "bad base64": lambda photo: {"instances": [{"image": {"b64": base64.b64encode(photo).decode()[:5001]}}]},
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_errors_carry_no_image_data(server, photo, outputs, case):
    response = httpx.post(f"{server.http_url}/v1/models/image-search:predict", json=BAD_REQUESTS[case](photo))
    outputs.append(response.text)
    assert response.status_code == 400, response.text


def test_other_refusals_carry_no_image_data_or_token(server, photo, outputs):
    infer = f"{server.http_url}/v2/models/image-search/infer"
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(photo).decode()]}
    bad_filter = httpx.post(infer, json={"inputs": [image], "parameters": {"filter": "vector != 0"}}, timeout=60)
    unknown_id = httpx.post(
        infer, json={"inputs": [{"name": "id", "datatype": "BYTES", "shape": [1], "data": ["nope"]}]}, timeout=60
    )
    body_start = json.dumps({"instances": [{"image": {"b64": base64.b64encode(photo).decode()}}]}).encode()
    too_large = raw_http.post(
        server.http_url,
        "/v1/models/image-search:predict",
        {"Content-Type": "application/json", "Content-Length": str(10**9)},
        [body_start],
    )
    assert (bad_filter.status_code, unknown_id.status_code, too_large.status) == (400, 400, 413)
    outputs += [bad_filter.text, unknown_id.text, too_large.body.decode()]


def test_bad_image_over_grpc_carries_no_image_data(server, photo, outputs):
    client = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo[: len(photo) // 2]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("image-search", [tensor])
    outputs.append(str(refused.value))


def test_a_server_started_before_milvus_stays_live_says_why_and_serves_once_milvus_is_up(
    secured_milvus, photo, tmp_path, outputs
):
    with reserved_port() as late:
        address = f"http://127.0.0.1:{late.port}"
        with run_predictor(address, tmp_path, env={"MILVUS_TOKEN": TOKEN}, wait_for="/v2/health/live") as early:
            ready = f"{early.http_url}/v2/models/image-search/ready"
            search = f"{early.http_url}/v1/models/image-search:predict"
            unready = httpx.get(ready, timeout=30)
            assert unready.status_code == 503 and address in unready.json()["error"]
            refused = httpx.post(search, json=v1(photo), timeout=60)
            assert refused.status_code == 503, refused.text
            status, message = grpc_search(early, photo, 60)
            assert status == "UNAVAILABLE", (status, message)
            outputs += [unready.text, refused.text, message]
            # Milvus appears at the address the server was given; the server is not restarted.
            late.forward_to(secured_milvus.removeprefix("http://"))
            wait_for(
                lambda: httpx.get(ready, timeout=30).status_code == 200,
                timeout_s=60,
                what="readiness once Milvus is up",
                interval_s=0.2,
            )
            served = httpx.post(search, json=v1(photo), timeout=60)
            assert served.status_code == 200, served.text
            assert served.json()["predictions"][0], served.text
            assert grpc_search(early, photo, 60)[0] == "OK"
            outputs.append(early.log())


def test_milvus_down_with_a_token_set(server, secured_milvus, photo, outputs):
    kill_milvus_server(secured_milvus)
    search = httpx.post(f"{server.http_url}/v1/models/image-search:predict", json=v1(photo), timeout=120)
    outputs.append(search.text)
    assert search.status_code == 503, search.text
    status, message = grpc_search(server, photo, 120)
    outputs.append(message)
    assert status == "UNAVAILABLE" and "Milvus" in message, (status, message)

    def not_ready() -> bool:
        response = httpx.get(f"{server.http_url}/v2/models/image-search/ready", timeout=30)
        outputs.append(response.text)
        return response.status_code == 503

    wait_for(not_ready, timeout_s=60, what="readiness turning false")
    cli = run_cli("collections", "--milvus-uri", secured_milvus, env={"MILVUS_TOKEN": TOKEN})
    outputs += [cli.stdout, cli.stderr]
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1


def test_a_bad_model_package_fails_the_start_cleanly(tmp_path, outputs, package_copy):
    package = package_copy(tmp_path / "broken")
    (package / "model.json").write_text('{"name": "x"')
    result = run_cli(
        "serve", "--milvus-uri", str(tmp_path / "m.db"), "--model-dir", str(package), env={"MILVUS_TOKEN": TOKEN}
    )
    outputs += [result.stdout, result.stderr]
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_no_token_image_bytes_or_base64_in_any_log_line_or_error(server, photo, outputs):
    texts = [*outputs, server.log()]
    assert len(texts) > 10, "the error cases above did not run"
    encoded = base64.b64encode(photo).decode()
    needles = {
        "the Milvus token": SECRET,
        "base64 of the photo": encoded[1000:1064],
        "base64 of the photo's start": encoded[:64],
        "the photo's bytes": repr(photo[200:232])[2:-1],
    }
    for what, needle in needles.items():
        leaks = [text for text in texts if needle in text]
        assert not leaks, (
            f"{what} appears in {len(leaks)} outputs, e.g. ...{leaks[0][max(0, leaks[0].find(needle) - 200) :][:400]}"
        )
