"""Start a Google Cloud Storage emulator (PyPI `gcp-storage-emulator`, the GCS JSON API in memory) on a free port.

google-cloud-storage talks to it when `STORAGE_EMULATOR_HOST` is set, with no credentials, which is how the product's
`gs://` code is reached unchanged.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.executables import venv_executable
from harness.polling import wait_for
from harness.predictor_server import free_port

EMULATOR_MISSING = "the GCS emulator (`gcp-storage-emulator`) is not installed; `make install` installs the test extra"
PROJECT = "image-search-tests"


@dataclass(frozen=True)
class RunningGcs:
    endpoint: str
    log_path: Path

    def env(self) -> dict[str, str]:
        """What a process needs to reach this store through google-cloud-storage's standard environment."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": PROJECT}

    def client(self):  # noqa: ANN201 - google-cloud-storage is imported lazily
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
        )


@contextlib.contextmanager
def run_gcs_server(workdir: Path, timeout_s: float = 60) -> Iterator[RunningGcs]:
    binary = venv_executable("gcp-storage-emulator")
    if binary is None:
        raise RuntimeError(EMULATOR_MISSING)
    port = free_port()
    log_path = workdir / "gcs-emulator.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    running = RunningGcs(f"http://127.0.0.1:{port}", log_path)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the GCS emulator exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{running.endpoint}/storage/v1/b", params={"project": PROJECT}, timeout=2).is_success
        return False

    try:
        wait_for(answers, timeout_s, "the GCS emulator answering", interval_s=0.2)
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
