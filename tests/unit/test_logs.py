"""Structured logs: one JSON object per line, one line per request, a configurable level, no image payloads."""

import asyncio
import base64
import json
import logging
import os
import re
import uuid
from datetime import datetime

import pytest

from predictor.errors import ClientGaveUp
from predictor.observability import logs
from predictor.observability.metrics import ServingMetrics
from predictor.observability.request_tracking import tracked

SERVER_LOGGERS = ("kserve", "kserve.trace", "uvicorn", "uvicorn.access", "uvicorn.error")
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{100,}")


@pytest.fixture(autouse=True)
def restore_logging():
    """configure_logging changes process-wide state; every test leaves it as it found it."""
    names = ("", logs.REQUEST_LOGGER, *SERVER_LOGGERS)
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    logging.captureWarnings(False)


def lines(capsys) -> list[dict]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def request_fields(**overrides):
    fields = {
        "request_id": "3f2a-41",
        "model": "image-search",
        "model_version": "imagenet-1",
        "protocol": "v2-rest",
        "images": 3,
        "latency_ms": 12.34567,
        "outcome": "success",
    }
    return {**fields, **overrides}


def test_a_request_is_one_json_line_with_every_field(capsys):
    logs.configure_logging()
    logs.log_request(**request_fields())
    (line,) = lines(capsys)
    assert line["level"] == "INFO"
    assert line["logger"] == "image_search.requests"
    assert line["message"] == "request"
    assert line["request_id"] == "3f2a-41"
    assert line["model"] == "image-search"
    assert line["model_version"] == "imagenet-1"
    assert line["protocol"] == "v2-rest"
    assert line["images"] == 3
    assert line["latency_ms"] == 12.346
    assert line["outcome"] == "success"
    assert line["error_reason"] is None


def test_timestamp_is_iso_8601_in_utc(capsys):
    logs.configure_logging()
    logs.log_request(**request_fields())
    (line,) = lines(capsys)
    assert line["ts"].endswith("Z")
    stamp = datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
    assert stamp.utcoffset().total_seconds() == 0


def test_a_failed_request_carries_its_error_reason(capsys):
    logs.configure_logging()
    logs.log_request(**request_fields(outcome="bad_input", error_reason="image 0: not a supported image"))
    (line,) = lines(capsys)
    assert line["outcome"] == "bad_input"
    assert line["error_reason"] == "image 0: not a supported image"


@pytest.mark.parametrize(
    ("status", "level"),
    [(200, "INFO"), (400, "INFO"), (404, "INFO"), (413, "INFO"), (503, "WARNING"), (504, "WARNING"), (500, "ERROR")],
)
def test_a_refused_request_says_what_it_was_told_at_a_level_that_says_whose_fault_it_was(capsys, status, level):
    logs.configure_logging()
    told = None if status == 200 else "what the client was told"
    logs.log_request(**request_fields(outcome="x", error=told, status=status))
    (line,) = lines(capsys)
    assert (line["level"], line["status"], line.get("error")) == (level, status, told)
    assert "exception" not in line


def test_extra_fields_of_any_logger_become_json_fields(capsys):
    logs.configure_logging()
    logging.getLogger("predictor.index.collection").warning("search took %d ms", 250, extra={"collection": "images"})
    (line,) = lines(capsys)
    assert line["message"] == "search took 250 ms"
    assert line["collection"] == "images"
    assert line["level"] == "WARNING"


def test_level_is_configurable(capsys):
    logs.configure_logging("WARNING")
    logs.log_request(**request_fields())
    logging.getLogger("kserve").info("hidden")
    logging.getLogger("kserve").error("shown")
    assert [line["message"] for line in lines(capsys)] == ["shown"]

    logs.configure_logging("debug")
    logging.getLogger("uvicorn.error").debug("now visible")
    assert [line["message"] for line in lines(capsys)] == ["now visible"]


@pytest.mark.parametrize(("level", "fmt", "message"), [("LOUD", "json", "log level"), ("INFO", "xml", "log format")])
def test_unknown_level_or_format_is_refused_with_the_choices(level, fmt, message):
    with pytest.raises(ValueError, match=f"unknown {message}.*use one of"):
        logs.configure_logging(level, fmt)


def test_server_loggers_print_json_once_each(capsys):
    logs.configure_logging()
    for name in SERVER_LOGGERS:
        logging.getLogger(name).info("hello from %s", name)
    found = lines(capsys)
    assert [(line["logger"], line["message"]) for line in found] == [
        (name, f"hello from {name}") for name in SERVER_LOGGERS
    ]


def test_configuring_twice_does_not_duplicate_lines(capsys):
    logs.configure_logging()
    logs.configure_logging()
    logs.log_request(**request_fields())
    logging.getLogger("kserve").info("once")
    assert len(lines(capsys)) == 2
    assert len(logging.getLogger("kserve").handlers) == 1


def test_kserve_model_server_keeps_our_handlers(capsys):
    import kserve

    logs.configure_logging()
    ours = list(logging.getLogger("kserve").handlers)
    kserve.ModelServer(http_port=0, grpc_port=0, enable_grpc=False)
    assert logging.getLogger("kserve").handlers == ours
    logging.getLogger("kserve").info("after the model server")
    (line,) = lines(capsys)
    assert line["message"] == "after the model server"


def test_uvicorn_color_message_is_dropped(capsys):
    logs.configure_logging()
    logging.getLogger("uvicorn.error").info("Started", extra={"color_message": "\x1b[32mStarted\x1b[0m"})
    (line,) = lines(capsys)
    assert "color_message" not in line


def test_text_format_is_for_people(capsys):
    logs.configure_logging("INFO", "text")
    logs.log_request(**request_fields(outcome="timeout", error_reason="timeout"))
    out = capsys.readouterr().out
    assert " INFO " in out
    assert "image_search.requests: request" in out
    assert "outcome=timeout" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def image_base64(size: int = 30_000) -> str:
    return base64.b64encode(os.urandom(size)).decode()


def test_no_base64_in_output_when_an_exception_quotes_an_image(capsys):
    logs.configure_logging()
    payload = image_base64()
    try:
        raise ValueError(f"cannot decode image {payload}")
    except ValueError:
        logging.getLogger("kserve").exception("request failed for %s", payload)
    out = capsys.readouterr().out
    assert payload[:100] not in out
    assert BASE64_RUN.search(out) is None
    (line,) = [json.loads(text) for text in out.splitlines()]
    assert line["message"].startswith("request failed for <redacted")
    assert "ValueError: cannot decode image <redacted" in line["exception"]
    assert "Traceback" in line["exception"]


def test_no_image_in_extra_fields(capsys):
    logs.configure_logging()
    raw = os.urandom(5_000)
    logging.getLogger("predictor").info(
        "decoded", extra={"raw": raw, "encoded": image_base64(), "nested": {"images": [image_base64(200)]}}
    )
    (line,) = lines(capsys)
    assert line["raw"] == "<5000 bytes>"
    assert line["encoded"].startswith("<redacted")
    assert line["nested"]["images"][0].startswith("<redacted")


def test_url_safe_base64_is_redacted_too(capsys):
    logs.configure_logging()
    payload = base64.urlsafe_b64encode(os.urandom(3_000)).decode()
    logging.getLogger("kserve").warning(payload)
    (line,) = lines(capsys)
    assert line["message"] == f"<redacted {len(payload)} base64-like chars>"


def test_long_strings_are_truncated(capsys):
    logs.configure_logging()
    logging.getLogger("predictor").info("word " * 1000)
    (line,) = lines(capsys)
    assert len(line["message"]) < logs.MAX_FIELD_CHARS + 40
    assert line["message"].endswith(f"<truncated {5000 - logs.MAX_FIELD_CHARS} chars>")


def test_identifiers_and_digests_are_kept(capsys):
    logs.configure_logging()
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    logs.log_request(**request_fields(request_id="0f8e6a4c-5b1d-4e8a-9c1e-3b2a1d0e9f8c", model_version=digest))
    (line,) = lines(capsys)
    assert line["model_version"] == digest
    assert line["request_id"] == "0f8e6a4c-5b1d-4e8a-9c1e-3b2a1d0e9f8c"


@pytest.mark.parametrize(
    "gave_up",
    [asyncio.CancelledError(), ClientGaveUp("the request did not finish within the client's deadline (0.5 s)")],
    ids=["went away", "own deadline"],
)
def test_a_request_whose_client_gave_up_is_logged_as_cancelled_not_as_served(capsys, gave_up):
    logs.configure_logging()
    served = ServingMetrics(f"test-{uuid.uuid4().hex[:8]}", "v1")
    with pytest.raises(type(gave_up)), tracked(served, "image-search", "v1", {}, {"x-request-id": "gone-1"}):
        raise gave_up
    (line,) = [line for line in lines(capsys) if line.get("request_id") == "gone-1"]
    assert (line["outcome"], line["status"], line["level"]) == ("cancelled", 499, "INFO")
