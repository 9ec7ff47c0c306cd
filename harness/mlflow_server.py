"""Start a real MLflow tracking server (SQLite backend, proxied artifacts in a local folder) on a free loopback port.

Usage::

    with run_mlflow_server(tmp_path) as mlflow:   # mlflow.url == "http://127.0.0.1:PORT"
        client = mlflow.client()

Artifacts are proxied (`--serve-artifacts`): clients upload and download through the server and see
`mlflow-artifacts:/...` locations, the set-up that needs the most from `image-search registry resolve`. They land under
`mlflow.artifacts_dir`, the server's `--artifacts-destination`.

`mlflow server` runs uvicorn as a child and forwards SIGTERM to it; the whole process group is stopped, and killed if it
has not gone by the deadline. The server's background job runner is switched off: the registry does not use it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.predictor_server import free_port

MLFLOW_MISSING = "MLflow is not installed (the mlflow extra): pip install -e '.[mlflow]'"
_START_ATTEMPTS = 3


class MlflowServerError(RuntimeError):
    """The server did not start; the message holds its log tail."""


def mlflow_installed() -> bool:
    return importlib.util.find_spec("mlflow") is not None


@dataclass(frozen=True)
class RunningMlflow:
    url: str
    artifacts_dir: Path
    log_path: Path
    process: subprocess.Popen

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path} (last {len(tail)} lines) ---\n" + "\n".join(tail)


@contextlib.contextmanager
def run_mlflow_server(workdir: Path, *, timeout_s: float = 90.0) -> Iterator[RunningMlflow]:
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    failures = []
    for attempt in range(_START_ATTEMPTS):
        running, failure = _start_once(workdir, attempt, deadline)
        if running is not None:
            break
        failures.append(failure)
        if time.monotonic() >= deadline:
            break
    else:
        running = None
    if running is None:
        raise MlflowServerError("mlflow server did not start:\n" + "\n\n".join(failures))
    try:
        yield running
    finally:
        _stop_group(running.process)


def _start_once(workdir: Path, attempt: int, deadline: float) -> tuple[RunningMlflow | None, str]:
    port = free_port()
    artifacts = workdir / "artifacts"
    log_path = workdir / f"mlflow-server-{attempt}.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningMlflow(f"http://127.0.0.1:{port}", artifacts, log_path, process)
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                # Most likely another process took the port between the probe and the bind: a new port fixes that.
                return None, f"exited with status {process.returncode}\n{running.log_tail()}"
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{running.url}/health").status_code == 200:
                    return running, ""
            time.sleep(0.25)
    _stop_group(process)
    return None, f"{running.url}/health did not answer 200 by the deadline\n{running.log_tail()}"


def _stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    # uvicorn may outlive the `mlflow server` parent by a moment; nothing of the group may survive the fixture.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
