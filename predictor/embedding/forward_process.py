"""The image network's forward pass on the CPU in a process of its own, fed through shared memory.

In the serving process the event loop, gRPC's threads and the decode pool run Python beside the forward pass, which
waits for the GIL between its parts whenever one of them holds it; the cores then sit idle while requests queue. A
child process with one Python thread has its GIL to itself. Pixels go to it through one shared buffer (no copy
through the pipe), the embeddings come back through the pipe (a few kilobytes per image).

The child loads and probes the network itself while the parent serves its own; the parent switches to the child
once the child says it is ready, and back to its own network if the child dies. The child then compiles in its own
background, at lower priority, as the server's process would, and reports the swap on a second pipe.
"""

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from predictor.observability.logs import configure_logging, logging_settings

if TYPE_CHECKING:
    from predictor.embedding.backbone import BatchOutput
    from predictor.embedding.model_package import ModelSpec

# Images per hand-over: a larger batch goes in several.
CAPACITY = 32
# libgomp's threads sleep at once at a barrier instead of spinning: spinning threads took the cores from the decode
# threads of the serving process (c=32 x0.86 with spinning, x1.09 without; docs/benchmarks.md). A wait policy the
# user set wins.
CHILD_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}
USERS_WAIT_POLICY = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
PROCESS_NAME = b"device-process"


class ForwardProcessGone(RuntimeError):
    """The child exited or its pipe broke; the caller runs the batch itself."""


@dataclass(frozen=True)
class ChildNetwork:
    """What the child's network is: sent when it is ready, and again when it swaps (`compiled`) or has finished
    compiling (`settled`: nothing more will change)."""

    precision: str
    compiled: bool
    note: str
    settled: bool = False


class ForwardProcess:
    """A child process that runs `Backbone.run` for the parent. start() returns at once; from a watcher thread,
    `on_state` is called once the child has loaded its network and serves, then with each later state."""

    def __init__(self, spec: "ModelSpec", precision_name: str, probe_min_cosine: float, compile_mode: str) -> None:
        size = spec.preprocessing.input_size
        self._shape = (CAPACITY, size, size, 3)
        self._child_arguments = (spec, precision_name, probe_min_cosine, compile_mode)
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self.network: ChildNetwork | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, on_state: Callable[[ChildNetwork], None], on_failed: Callable[[str], None]) -> None:
        try:
            self._memory = shared_memory.SharedMemory(create=True, size=int(np.prod(self._shape)))
        except OSError as error:
            on_failed(f"no shared memory for the forward process ({error})")
            return
        self._pixels: np.ndarray = np.ndarray(self._shape, dtype=np.uint8, buffer=self._memory.buf)
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._events, child_events = context.Pipe(duplex=False)
        self._process = context.Process(
            target=serve_forward_passes,
            args=(child_end, child_events, self._memory.name, self._shape, logging_settings(), *self._child_arguments),
            name="device-process",
            daemon=True,
        )
        # A spawned child takes this process's environment as it is at start; only these keys change, and only
        # for that moment.
        added = {} if any(key in os.environ for key in USERS_WAIT_POLICY) else CHILD_ENVIRONMENT
        os.environ.update(added)
        try:
            self._process.start()
        finally:
            for key in added:
                os.environ.pop(key, None)
        child_end.close()
        child_events.close()
        threading.Thread(target=self._watch, args=(on_state, on_failed), name="device-watch", daemon=True).start()

    def _watch(self, on_state: Callable[[ChildNetwork], None], on_failed: Callable[[str], None]) -> None:
        try:
            message = self._connection.recv()
        except (EOFError, OSError):
            on_failed(f"the forward process exited while loading ({self.exit_status()})")
            return
        if not isinstance(message, ChildNetwork):
            on_failed(str(message))
            return
        self.network = message
        on_state(message)
        while not message.settled:
            try:
                message = self._events.recv()
            except (EOFError, OSError):  # the child is gone: the next batch finds out and says so
                return
            self.network = message
            on_state(message)

    def exit_status(self) -> str:
        if self._process is not None:
            self._process.join(timeout=1)
        code = self._process.exitcode if self._process is not None else None
        return "still running" if code is None else f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def run(self, pixels: np.ndarray, with_probabilities: bool) -> list["BatchOutput"]:
        """The outputs of `pixels` in parts of at most CAPACITY images; raises ForwardProcessGone."""
        parts = []
        with self._lock:
            try:
                for start in range(0, len(pixels), CAPACITY):
                    chunk = pixels[start : start + CAPACITY]
                    self._pixels[: len(chunk)] = chunk
                    self._connection.send((len(chunk), with_probabilities))
                    answer = self._connection.recv()
                    if isinstance(answer, BaseException):
                        raise answer
                    parts.append(answer)
            except (EOFError, OSError) as error:
                raise ForwardProcessGone(f"the forward process is gone ({self.exit_status()})") from error
        return parts

    def close(self) -> None:
        """Stop the child (it exits when the pipe closes) and free the shared buffer; a second call does nothing."""
        process, self._process = self._process, None
        if process is None:
            return
        self._connection.close()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
        self._memory.close()
        self._memory.unlink()


def serve_forward_passes(
    connection: "multiprocessing.connection.Connection",
    events: "multiprocessing.connection.Connection",
    memory_name: str,
    shape: tuple[int, ...],
    log_settings: tuple[str, str] | None,
    spec: "ModelSpec",
    precision_name: str,
    probe_min_cosine: float,
    compile_mode: str,
) -> None:
    """The child: load the network as an in-process Backbone would, then answer batches until the pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group: the parent stops, and its exit closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_settings is not None:
        configure_logging(*log_settings)
    try:
        Path("/proc/self/comm").write_bytes(PROCESS_NAME)
    except OSError:  # not Linux: the name only helps `top` and the benchmarks
        pass
    from predictor.embedding.backbone import Backbone

    memory = shared_memory.SharedMemory(name=memory_name)
    pixels: np.ndarray = np.ndarray(shape, dtype=np.uint8, buffer=memory.buf)
    try:
        backbone = Backbone(spec, "cpu", precision_name, probe_min_cosine, compile_mode, compile_in_background=True)
        backbone.load()
    except Exception as error:  # noqa: BLE001 - reported to the parent, which keeps serving its own network
        connection.send(f"the forward process could not load the network: {error}")
        return

    def state(settled: bool = False) -> ChildNetwork:
        return ChildNetwork(backbone.precision, backbone.serving["image"] == "compiled", backbone.compilation, settled)

    connection.send(state())
    sending = threading.Lock()

    def report(tower: str, network: str) -> None:
        if tower == "image" and network == "compiled":
            with sending:
                events.send(state())

    def report_until_settled() -> None:
        backbone.watch_serving(report)
        backbone.compile_done.wait()
        with sending:
            events.send(state(settled=True))

    threading.Thread(target=report_until_settled, name="device-report", daemon=True).start()
    backbone.start_background_compile()
    while True:
        try:
            count, with_probabilities = connection.recv()
        except (EOFError, OSError):
            return
        try:
            answer: object = backbone.run(pixels[:count], with_probabilities)
        except Exception as error:  # noqa: BLE001 - the parent raises it as its own
            answer = RuntimeError(f"forward pass failed in the forward process: {error}")
        connection.send(answer)
