"""A refused request is logged once, as its request line at INFO with what it was told, never as an ERROR with a
traceback (KServe's own handlers log every error that way); a readiness 503 loses its traceback too.

Through KServe's real REST app and gRPC server in process (tests/unit/conftest.py), capturing what reaches the
loggers. The scan of a real server's whole output for secrets is in tests/e2e/test_milvus_faults.py.
"""

import contextlib
import logging

import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from tests.unit.conftest import COLOURS, solid_jpeg
from tests.unit.transports import TRANSPORTS, ask

RED = solid_jpeg(COLOURS["red"])
WATCHED = ("kserve", "image_search.requests", "uvicorn.error", "grpc", "")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: dict[int, logging.LogRecord] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.records[id(record)] = record

    def requests(self) -> list[logging.LogRecord]:
        return [r for r in self.records.values() if r.name == "image_search.requests"]

    def loud(self) -> list[str]:
        return [
            f"{r.levelname} {r.name}: {r.getMessage()}"
            for r in self.records.values()
            if r.levelno >= logging.ERROR or r.exc_info or r.exc_text
        ]


@contextlib.contextmanager
def captured():
    handler = Records()
    loggers = [logging.getLogger(name) for name in WATCHED]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def assert_one_quiet_request_line(records: Records, status: int, says: str) -> None:
    assert not records.loud(), records.loud()
    (line,) = records.requests()
    assert line.levelno == logging.INFO
    assert (line.status, line.outcome) == (status, "bad_input")
    assert says in line.error


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("case", "status", "says"),
    [
        ("not an image", 400, "image 0: not"),
        ("bad parameter", 400, "'top_k' must be an integer"),
        ("bad filter", 400, "'vector' is not a metadata field"),
        ("unknown id", 400, "id 'nope' is not in namespace"),
        ("unknown model", 404, "model 'nope' is not served here"),
    ],
)
def test_a_client_error_is_one_request_line_at_info_without_a_traceback(
    in_process_server, transport, case, status, says
):
    name, elements, parameters, model = {
        "not an image": ("image", [b"not an image at all"], {}, "image-search"),
        "bad parameter": ("image", [RED], {"top_k": 0}, "image-search"),
        "bad filter": ("image", [RED], {"filter": "vector != 0"}, "image-search"),
        "unknown id": ("id", ["nope"], {}, "image-search"),
        "unknown model": ("image", [RED], {}, "nope"),
    }[case]
    with captured() as records:
        answer = ask(in_process_server, transport, name, elements, parameters, model=model)
    assert answer.status == ("INVALID_ARGUMENT" if status == 400 else "NOT_FOUND") if transport == "grpc" else status
    assert_one_quiet_request_line(records, status, says)


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/v1/models/image-search:predict", b"{not json", "Unrecognized request format"),
        ("/v2/models/image-search/infer", b'{"inputs": "an image"}', "inputs: Input should be a valid list"),
    ],
)
def test_a_body_kserve_cannot_read_is_400_and_one_quiet_line(in_process_server, path, body, says):
    with captured() as records:
        response = in_process_server.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and says in response.json()["error"]
    assert_one_quiet_request_line(records, 400, says)


def test_an_unready_server_answers_probes_without_logging_tracebacks(in_process_server):
    from tests.unit.test_kserve_compat import milvus_failing

    with milvus_failing(in_process_server, searches_only=False), captured() as records:
        assert in_process_server.get("/v2/health/ready").status_code == 503
        assert in_process_server.get("/v2/models/image-search/ready").status_code == 503
        assert not in_process_server.grpc("ServerReady", pb.ServerReadyRequest()).ready
    assert not records.loud(), records.loud()


def test_a_request_the_server_cannot_answer_is_a_warning(in_process_server):
    from tests.unit.test_kserve_compat import milvus_failing

    with milvus_failing(in_process_server, searches_only=True), captured() as records:
        assert ask(in_process_server, "grpc", "image", [RED]).status == "UNAVAILABLE"
    (line,) = records.requests()
    assert (line.levelno, line.status, line.outcome) == (logging.WARNING, 503, "milvus_unavailable")
    assert not records.loud(), records.loud()
