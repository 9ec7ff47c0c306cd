"""Start the real `image-search serve` process on free ports and wait until it reports ready."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "predictor.cli"]


# A free port can be taken between the probe and the server's bind (by a parallel test, or a Milvus server probing
# upward for its own ports): a server that exits for that is started again on other ports.
BIND_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class RunningServer:
    http_url: str
    grpc_address: str
    http_port: int
    grpc_port: int
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    """`image-search ARGS`; `cwd` is the source tree whose `predictor` runs (another checkout, for benchmarks)."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})}
    )


def stop_process(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not gone within the grace period."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def wait_until(
    url: str, process: subprocess.Popen, log_path: Path, timeout_s: float, endpoint: str = "/v2/health/ready"
) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}{endpoint}").status_code == 200:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"{url}{endpoint} not 200 after {timeout_s}s:\n{log_path.read_text()[-4000:]}")


@contextlib.contextmanager
def run_predictor(
    milvus_uri: str | None,
    workdir: Path,
    *extra_args: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 180,
    wait_for: str = "/v2/health/ready",
    cwd: Path = REPO_ROOT,
) -> Iterator[RunningServer]:
    """Yields once `wait_for` answers 200: readiness by default, `/v2/health/live` for a server expected unready.

    `milvus_uri=None` passes no `--milvus-uri`, for a server configured by its environment. `cwd` is the source tree
    whose `predictor` serves (another checkout, for benchmarks).
    """
    for attempt in range(1, BIND_ATTEMPTS + 1):
        http_port, grpc_port = free_port(), free_port()
        log_path = workdir / f"predictor-{http_port}.log"
        command = [*CLI, "serve", "--http_port", str(http_port), "--grpc_port", str(grpc_port)]
        command += ["--milvus-uri", milvus_uri] if milvus_uri is not None else []
        command += extra_args
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, **(env or {})}
            )
        url = f"http://127.0.0.1:{http_port}"
        try:
            wait_until(url, process, log_path, timeout_s, wait_for)
            break
        except RuntimeError:
            stop_process(process)
            if attempt == BIND_ATTEMPTS or "address already in use" not in log_path.read_text(errors="replace"):
                raise
    try:
        yield RunningServer(url, f"127.0.0.1:{grpc_port}", http_port, grpc_port, log_path, process)
    finally:
        stop_process(process)
