"""Start a real Prometheus on a free loopback port, scraping given targets and evaluating given rule files."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from harness.predictor_server import free_port, stop_process

T = TypeVar("T")


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunningPrometheus:
    url: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"GET /api/v1/{path} {params}: {response.status_code} {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant vector: ``[{"metric": {...}, "value": [ts, "1.5"]}, ...]``."""
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        data = self.api("query", **params)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} returned a {data['resultType']}, not an instant vector")
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict]:
        """A range matrix: ``[{"metric": {...}, "values": [[ts, "1.5"], ...]}, ...]``."""
        return self.api("query_range", query=expr, start=start, end=end, step=step_s)["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        return self.api(f"label/{label}/values", **{"match[]": match})

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def rule_groups(self) -> list[dict]:
        return self.api("rules")["groups"]

    def wait_for(self, describe: str, check: Callable[[], T], timeout_s: float, poll_s: float = 0.25) -> T:
        """Poll ``check`` until it returns something truthy and return it; at the deadline, fail naming ``describe``."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            last = check()
            if last:
                return last
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout_s}s still waiting for {describe}; last check returned {last!r}")
            time.sleep(poll_s)


def write_config(
    path: Path,
    *,
    job: str,
    targets: list[str],
    target_labels: dict[str, str],
    rule_files: list[Path],
    interval_s: int,
    more_targets: Sequence[tuple[list[str], dict[str, str]]] = (),
) -> None:
    """One scrape job; `targets` carry `target_labels`, and each (targets, labels) in `more_targets` its own labels."""
    groups = [(targets, target_labels), *more_targets]
    config = {
        "global": {
            "scrape_interval": f"{interval_s}s",
            "scrape_timeout": f"{interval_s}s",
            "evaluation_interval": f"{interval_s}s",
        },
        "rule_files": [str(rule_file.resolve()) for rule_file in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": group, "labels": labels} for group, labels in groups],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@contextlib.contextmanager
def run_prometheus(
    workdir: Path,
    *,
    job: str,
    targets: list[str],
    target_labels: dict[str, str],
    rule_files: list[Path],
    interval_s: int = 1,
    timeout_s: float = 30,
    more_targets: Sequence[tuple[list[str], dict[str, str]]] = (),
) -> Iterator[RunningPrometheus]:
    binary = prometheus_binary()
    if binary is None:
        raise PrometheusError("prometheus is not on PATH; hack/tools/prometheus.sh installs it")
    config_path = workdir / "prometheus.yml"
    write_config(
        config_path,
        job=job,
        targets=targets,
        target_labels=target_labels,
        rule_files=rule_files,
        interval_s=interval_s,
        more_targets=more_targets,
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    running = RunningPrometheus(f"http://127.0.0.1:{port}", log_path, process)
    try:

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{running.url}/-/ready", timeout=2).status_code == 200
            return False

        running.wait_for("Prometheus to report ready on /-/ready", ready, timeout_s)
        yield running
    finally:
        stop_process(process, grace_s=10.0)
