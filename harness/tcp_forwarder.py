"""A local TCP port that refuses connections until a test connects it to a real service (a Milvus that starts late).

The port is bound at once, so nothing else can take it, but not listened on: the kernel refuses every connection to
it exactly as if nothing were there. `forward_to` then listens and forwards each connection, byte for byte, to the
target, so whatever speaks over it (gRPC, HTTP) is unchanged.

    with reserved_port() as late:
        ...  # connections to 127.0.0.1:late.port are refused
        late.forward_to("127.0.0.1:19530")
        ...  # connections to 127.0.0.1:late.port reach 127.0.0.1:19530
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

__all__ = ["LatePort", "reserved_port"]


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


class LatePort:
    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._acceptor: threading.Thread | None = None

    def forward_to(self, target: str) -> None:
        """From now on, connections to the port reach `target` ("host:port")."""
        host, port = target.rsplit(":", 1)
        self._listener.listen()
        # accept() is not woken by close(), so it wakes up now and then to see `_stopping`.
        self._listener.settimeout(0.2)
        self._acceptor = threading.Thread(target=self._accept, args=(host, int(port)), daemon=True)
        self._acceptor.start()

    def _accept(self, host: str, port: int) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection((host, port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._connections.extend((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        self._listener.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


@contextlib.contextmanager
def reserved_port() -> Iterator[LatePort]:
    late = LatePort()
    try:
        yield late
    finally:
        late.close()
