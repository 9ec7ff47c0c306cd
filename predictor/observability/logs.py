"""Structured logs of the image search service: one JSON object per line on stdout, and one line per request.

``configure_logging`` owns the root logger and the loggers KServe and uvicorn write to, so that every line a pod prints
has the same shape (``ts``, ``level``, ``logger``, ``message`` and any ``extra`` fields) and log collectors need no
per-source parsing. Our handler is attached to ``kserve`` before ``kserve.ModelServer`` is created, which is the signal
KServe reads to leave logging alone instead of installing its own handlers.

Requests carry images, and an exception message can quote what it failed on: a redaction filter on the handler
replaces base64-looking runs and truncates long strings in every record, whichever logger it came from.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from predictor.errors import ServiceError

__all__ = [
    "MAX_FIELD_CHARS",
    "REQUEST_LOGGER",
    "RedactingFilter",
    "configure_logging",
    "log_refusal",
    "log_request",
    "request_log_level",
]

REQUEST_LOGGER = "image_search.requests"
MAX_FIELD_CHARS = 512
# A traceback is the one field worth keeping long: its frames say where a failure came from.
MAX_TRACEBACK_CHARS = 8192
# Shorter runs are identifiers and digests an operator wants to read (a SHA-256 in hex is 64 characters); an image,
# even a tiny one, is thousands.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{100,}={0,2}")

# Loggers that KServe and uvicorn configure for themselves when nobody else has.
_SERVER_LOGGERS = ("kserve", "kserve.trace", "uvicorn", "uvicorn.access", "uvicorn.error")
_FORMATS = ("json", "text")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# uvicorn adds an ANSI-coloured copy of its message that only a terminal wants.
_DROPPED_EXTRAS = frozenset({"color_message"})

_request_log = logging.getLogger(REQUEST_LOGGER)


def _redact_text(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    text = _BASE64_RUN.sub(lambda match: f"<redacted {len(match.group())} base64-like chars>", text)
    if len(text) > limit:
        return f"{text[:limit]}...<truncated {len(text) - limit} chars>"
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(key): _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    return _redact_text(str(value))


class RedactingFilter(logging.Filter):
    """Keeps image payloads out of logs: base64-looking runs are replaced and long strings truncated.

    The message is rendered here (arguments merged in) so that what a formatter prints has been through the filter,
    and so has the traceback of an exception.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _redact_text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact_text(record.exc_text, MAX_TRACEBACK_CHARS)
        if record.stack_info:
            record.stack_info = _redact_text(record.stack_info, MAX_TRACEBACK_CHARS)
        for key in _extra_keys(record):
            setattr(record, key, _redact_value(getattr(record, key)))
        return True


def _extra_keys(record: logging.LogRecord) -> list[str]:
    return [key for key in record.__dict__ if key not in _RECORD_ATTRIBUTES and key not in _DROPPED_EXTRAS]


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (ISO-8601, UTC), ``level``, ``logger``, ``message``, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _extra_keys(record):
            entry.setdefault(key, getattr(record, key))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A line for people at a terminal: time, level, logger and message, then the extras as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(ts)s %(levelname)-8s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        setattr(record, "ts", _timestamp(record))  # noqa: B010 - an attribute LogRecord does not declare
        try:
            line = super().format(record)
        finally:
            delattr(record, "ts")
        extras = " ".join(f"{key}={getattr(record, key)}" for key in _extra_keys(record))
        if not extras:
            return line
        head, newline, rest = line.partition("\n")
        return f"{head} {extras}{newline}{rest}"


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of the record, so a replaced stdout is honoured."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


_configured: tuple[str, str] | None = None


def logging_settings() -> tuple[str, str] | None:
    """The level and format configure_logging was last called with, for a child process to log as its parent."""
    return _configured


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send the root, KServe and uvicorn loggers to stdout in one format, at one level.

    ``fmt`` is ``json`` (one object per line, for log collectors) or ``text`` (for people). Calling it again replaces
    the previous configuration rather than adding a second handler. Call it before ``kserve.ModelServer`` is created:
    KServe installs its own handlers only when its logger has none.
    """
    level_name = level.upper() if isinstance(level, str) else ""
    if level_name not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}")
    if fmt not in _FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(_FORMATS)}")

    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())

    root = logging.getLogger()
    # Only our own handler is replaced on the root: others (a test harness's capture, say) are not ours to remove.
    for old in [existing for existing in root.handlers if isinstance(existing, _StdoutHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_name)

    # These loggers do not propagate, as KServe would set them up, so each record is printed once by its own handler.
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        for previous in list(server_logger.handlers):
            server_logger.removeHandler(previous)
        server_logger.addHandler(handler)
        server_logger.setLevel(level_name)
        server_logger.propagate = False

    logging.captureWarnings(True)
    global _configured  # noqa: PLW0603 - one configuration per process, as the logging module's own
    _configured = (level_name, fmt)


def request_log_level(http_status: int | None) -> int:
    """INFO for a request served or refused as the client's mistake, WARNING when the server or Milvus could not
    answer (503, 504), ERROR for a bug (500), which the transport also logs with its traceback."""
    if http_status is None or http_status < 500:
        return logging.INFO
    return logging.ERROR if http_status == 500 else logging.WARNING


def log_request(
    *,
    request_id: str,
    model: str,
    model_version: str,
    protocol: str,
    images: int,
    latency_ms: float | None,
    outcome: str,
    error_reason: str | None = None,
    error: str | None = None,
    status: int | None = None,
) -> None:
    """Log one served request on ``image_search.requests`` with message ``request`` and its fields: `status` (the
    HTTP status it got, or its equivalent for gRPC) and, for a refused request, `error` (what it was told)."""
    _request_log.log(
        request_log_level(status),
        "request",
        extra={
            "request_id": request_id,
            "model": model,
            "model_version": model_version,
            "protocol": protocol,
            "images": images,
            "latency_ms": None if latency_ms is None else round(float(latency_ms), 3),
            "outcome": outcome,
            "error_reason": error_reason,
            **({"status": status} if status is not None else {}),
            **({"error": error} if error is not None else {}),
        },
    )


def log_refusal(error: ServiceError, protocol: str, model: str, headers: Mapping[str, str] | None) -> None:
    """The one request line of a request refused before any model saw it (decoding, routing, the size limit); a no-op
    for an error whose request line has been written already."""
    if error.logged:
        return
    error.logged = True
    log_request(
        request_id=(headers or {}).get("x-request-id") or str(uuid.uuid4()),
        model=model,
        model_version="",
        protocol=protocol,
        images=0,
        latency_ms=None,
        outcome=error.status.reason,
        error_reason=error.status.reason,
        error=error.message,
        status=error.status.http,
    )
