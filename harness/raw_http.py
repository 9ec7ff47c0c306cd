"""HTTP/1.1 over a bare socket, for requests no well-behaved client sends: a body that never comes, one that is far too
large and is still being pushed when the server answers, or a path with `..` in it that clients would tidy away."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RawResponse:
    status: int
    body: bytes
    sent_bytes: int  # of the body, before the server's answer arrived
    seconds: float  # from the end of the headers to the answer

    def json(self) -> dict:
        return json.loads(self.body)


def post(
    address: str,
    path: str,
    headers: dict[str, str],
    chunks: Iterable[bytes] = (),
    chunked: bool = False,
    timeout_s: float = 30.0,
    method: str = "POST",
) -> RawResponse:
    """Send the headers, then `chunks` until the server answers; return its answer (status and body)."""
    host, port = address.removeprefix("http://").rsplit(":", 1)
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    if chunked:
        head.append("Transfer-Encoding: chunked")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        started = time.monotonic()
        answered_at = None
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                answered_at = time.monotonic()
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            except OSError:
                break  # the server closed the connection; its answer, if any, is already waiting
            sent += len(chunk)
        else:
            if chunked:
                with contextlib.suppress(OSError):
                    sock.sendall(b"0\r\n\r\n")  # the last chunk
        received = b""
        try:
            while b"\r\n\r\n" not in received or len(received) < _expected_length(received):
                data = sock.recv(65536)
                if not data:
                    break
                received += data
                answered_at = answered_at or time.monotonic()
        except ConnectionResetError:
            pass  # after a server that stopped reading closes, the data it sent stays readable until the reset
    if not received:
        raise ConnectionError(f"no answer from {address}{path} after {sent} body bytes")
    status_line, _, rest = received.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return RawResponse(int(status_line.split()[1]), body, sent, (answered_at or time.monotonic()) - started)


def get(address: str, path: str, timeout_s: float = 30.0) -> RawResponse:
    """GET `path` exactly as written, dot segments and all."""
    return post(address, path, {}, timeout_s=timeout_s, method="GET")


def _expected_length(received: bytes) -> int:
    head, _, _ = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(received) + 1
