"""The request size limit: its default follows the image limits, and the middleware refuses before it reads."""

import asyncio
import logging

import pytest

from predictor.imaging.decoding import ImageLimits
from predictor.index.settings import MilvusSettings
from predictor.observability.logs import REQUEST_LOGGER
from predictor.serving.request_size import (
    DERIVED_LIMIT_CAP_BYTES,
    RequestSizeLimit,
    base64_length,
    default_max_request_bytes,
    largest_image_request_bytes,
)
from predictor.serving.settings import ServeSettings

MIB = 1024 * 1024


def settings(**overrides) -> ServeSettings:
    values = dict(
        milvus=MilvusSettings("x.db", "images"),
        model_dir=None,
        device="cpu",
        max_batch_size=8,
        max_batch_delay_ms=5,
        limits=ImageLimits(),
    )
    return ServeSettings(**{**values, **overrides})


def test_default_limit_is_capped_for_the_default_image_limits():
    assert default_max_request_bytes(ImageLimits()) == DERIVED_LIMIT_CAP_BYTES == 64 * MIB


def test_default_limit_shrinks_with_the_image_limits():
    one_image = ImageLimits(max_bytes=2 * MIB, max_images=1)
    assert default_max_request_bytes(one_image) == largest_image_request_bytes(one_image)
    assert base64_length(2 * MIB) < default_max_request_bytes(one_image) < 3 * MIB


def test_default_limit_always_holds_one_largest_image():
    huge_images = ImageLimits(max_bytes=100 * MIB)
    assert default_max_request_bytes(huge_images) >= base64_length(100 * MIB)


def test_settings_derive_the_limit_and_refuse_one_that_cannot_hold_an_image():
    assert settings().max_request_bytes == 64 * MIB
    with pytest.raises(ValueError, match="--max-request-bytes 1000 cannot hold one image"):
        settings(max_request_bytes=1000)


class Recorder:
    """The app behind the middleware: records the body it read, answers 200."""

    def __init__(self) -> None:
        self.body: bytes | None = None

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.body = body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(
    limit: int, chunks: list[bytes], content_length: int | None, path: str = "/v2/models/image-search/infer"
) -> tuple[int, Recorder, int]:
    app = Recorder()
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    scope = {"type": "http", "headers": headers, "path": path}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    received = 0
    sent: list[dict] = []

    async def receive():
        nonlocal received
        received += 1
        return pending.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(RequestSizeLimit(app, limit)(scope, receive, send))
    return sent[0]["status"], app, received


def test_declared_length_over_the_limit_is_refused_without_reading():
    status, app, received = call(100, [b"x" * 200], content_length=200)
    assert (status, app.body, received) == (413, None, 0)


def test_streamed_body_is_read_only_up_to_the_limit():
    status, app, received = call(100, [b"x" * 60] * 10, content_length=None)
    assert (status, app.body, received) == (413, None, 2)


@pytest.mark.parametrize("content_length", [None, 100])
def test_body_within_the_limit_reaches_the_app_whole(content_length):
    status, app, _ = call(100, [b"a" * 50, b"b" * 50], content_length=content_length)
    assert (status, app.body) == (200, b"a" * 50 + b"b" * 50)


def test_a_refusal_is_one_request_line_naming_the_model_and_the_limit(caplog):
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    call(100, [b"x" * 200], content_length=200, path="/v1/models/image-search:predict")
    (line,) = [record for record in caplog.records if record.name == REQUEST_LOGGER]
    assert (line.levelno, line.status, line.model, line.protocol) == (logging.INFO, 413, "image-search", "v1")
    assert "200 bytes, over the limit of 100 bytes" in line.error and not line.exc_info
