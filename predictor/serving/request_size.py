"""A ceiling on the size of a request body, enforced before the body is read (`--max-request-bytes`).

Without one, a client could make the server buffer, parse and copy any amount: a 200 MB JSON body once cost the
server about 700 MB of memory before it was refused. `RequestSizeLimit` is plain ASGI, so it sits in front of the
whole REST app:

- a body that declares a larger `Content-Length` gets 413 at once, and not one byte of it is read;
- a streamed (chunked) body is counted as it arrives, and reading stops at the limit with the same 413.

The gRPC server gets the same number as its maximum message size (see `server.py`).
"""

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from predictor.errors import RequestTooLarge
from predictor.imaging.decoding import ImageLimits
from predictor.observability.logs import log_refusal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# JSON or the binary extension's header around the images: names, shapes, parameters, requested outputs.
ENVELOPE_BYTES = 64 * 1024
# Quotes and a comma around each base64 string in JSON; a 4-byte length before each element in binary form.
PER_IMAGE_FRAMING_BYTES = 8
# A request of 64 images of 10 MiB each is 854 MiB as base64: no pod should buffer that much for one request. Like
# Triton's default, the derived limit stops here, though never below one largest image.
DERIVED_LIMIT_CAP_BYTES = 64 * 1024 * 1024


def base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def largest_image_request_bytes(limits: ImageLimits) -> int:
    """The body of a request that carries one image at the per-image limit, as base64 JSON (the larger form)."""
    return base64_length(limits.max_bytes) + PER_IMAGE_FRAMING_BYTES + ENVELOPE_BYTES


def default_max_request_bytes(limits: ImageLimits) -> int:
    """What `--max-request-bytes` defaults to: a full request at the image limits, capped, but always one image."""
    full_request = limits.max_images * (base64_length(limits.max_bytes) + PER_IMAGE_FRAMING_BYTES) + ENVELOPE_BYTES
    return max(largest_image_request_bytes(limits), min(full_request, DERIVED_LIMIT_CAP_BYTES))


_MODEL_PATH = re.compile(r"^/v(?P<protocol>[12])/models/(?P<model>[^/:]+)")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value)
    return None


class RequestSizeLimit:
    """ASGI middleware: 413 for any HTTP request whose body is, or turns out to be, larger than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            declared = _declared_length(scope)
        except ValueError:
            await self._respond(send, 400, "Content-Length is not a number")
            return
        if declared is not None:
            # The HTTP server never delivers more than the declared length, so nothing needs counting.
            if declared > self.max_bytes:
                await self._refuse(scope, send, f"the request body is {declared} bytes, over")
            else:
                await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before it finished sending
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, send, "the streamed request body grew past")
                return
            buffered.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, what: str) -> None:
        error = RequestTooLarge(f"{what} the limit of {self.max_bytes} bytes per request (--max-request-bytes)")
        path = _MODEL_PATH.match(scope.get("path", ""))
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())}
        protocol = "v1" if path and path.group("protocol") == "1" else "v2-rest"
        log_refusal(error, protocol, path.group("model") if path else "", headers)
        await self._respond(send, error.status.http, error.message)

    @staticmethod
    async def _respond(send: Send, status: int, error: str) -> None:
        body = json.dumps({"error": error}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            # The rest of the body is never read, so the connection cannot carry another request.
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
