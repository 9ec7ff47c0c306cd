"""The cluster of the current kube context, as the kind tests use it: waits with deadlines and port-forwards.

Nothing here needs a cluster to be imported, and the parts that can be checked without one are
(tests/unit/test_kind_cluster.py): the readiness rule, the waits' deadlines, the port-forward's start and failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KSERVE_GROUP, KSERVE_VERSION, INFERENCE_SERVICES = "serving.kserve.io", "v1beta1", "inferenceservices"
_FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")


class ClusterUnavailable(RuntimeError):
    """There is no cluster to test against; the message says why and what to do."""


class PortForwardError(RuntimeError):
    pass


def tool(name: str) -> str:
    """helm and kubectl from bin/ (hack/tools/k8s.sh puts them there) or from PATH."""
    local = REPO / "bin" / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise ClusterUnavailable(f"{name} is not installed: run hack/tools/k8s.sh (make tools)")
    return found


def kubeconfig() -> str:
    # Read now, not when the kubernetes package was imported, which caches the variable it found then.
    return os.environ.get("KUBECONFIG") or "~/.kube/config"


def current_context() -> str:
    """The kube context the tests run against; raises ClusterUnavailable when there is none."""
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig())
    except (config.ConfigException, FileNotFoundError) as error:
        raise ClusterUnavailable(
            f"no kube context ({error}): create a kind cluster with `make kind-up` or point KUBECONFIG at one"
        ) from None
    if not active:
        raise ClusterUnavailable("the kubeconfig has no current context: `kubectl config use-context NAME`")
    return active["name"]


def api_client(context: str):
    from kubernetes import config

    return config.new_client_from_config(config_file=kubeconfig(), context=context, persist_config=False)


def inference_service_ready(isvc: dict) -> tuple[bool, str]:
    """Whether KServe reports the InferenceService Ready, and what its conditions say otherwise."""
    conditions = (isvc.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return True, "Ready"
    pending = [
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']}: {c.get('message', '')})" if c.get("reason") else "")
        for c in conditions
        if c.get("status") != "True"
    ]
    return False, "; ".join(pending) or "no conditions reported yet"


def wait_until(
    check: Callable[[], tuple[bool, str]],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Poll `check` (returning done and a description) until done; a check that raises counts as not done.
    At the deadline, TimeoutError names `what` and the last description or error."""
    deadline = clock() + timeout_s
    last = "not checked yet"
    while True:
        try:
            done, last = check()
        except Exception as error:  # noqa: BLE001 - an API server that is restarting answers with anything
            done, last = False, f"{type(error).__name__}: {error}"
        if done:
            return last
        if clock() >= deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f}s; last: {last}")
        time.sleep(min(interval_s, max(0.0, deadline - clock())))


def wait_for_inference_service(api, name: str, namespace: str, timeout_s: float) -> None:
    from kubernetes import client

    objects = client.CustomObjectsApi(api)

    def ready() -> tuple[bool, str]:
        isvc = objects.get_namespaced_custom_object(
            KSERVE_GROUP, KSERVE_VERSION, namespace, INFERENCE_SERVICES, name, _request_timeout=10
        )
        return inference_service_ready(isvc)

    wait_until(ready, timeout_s, f"InferenceService {namespace}/{name} Ready", interval_s=3.0)


def wait_for_deployment(api, name: str, namespace: str, timeout_s: float) -> None:
    """Until every replica of the Deployment runs the current template and is available."""
    from kubernetes import client

    apps = client.AppsV1Api(api)

    def available() -> tuple[bool, str]:
        deployment = apps.read_namespaced_deployment(name, namespace, _request_timeout=10)
        status, wanted = deployment.status, deployment.spec.replicas or 0
        done = (status.observed_generation or 0) >= deployment.metadata.generation and (
            status.updated_replicas or 0
        ) == (status.available_replicas or 0) == wanted > 0
        return done, f"{status.available_replicas or 0} of {wanted} available, {status.updated_replicas or 0} updated"

    wait_until(available, timeout_s, f"Deployment {namespace}/{name} available", interval_s=3.0)


def forwarded_port(line: str) -> tuple[int, int] | None:
    """(local, remote) from a `kubectl port-forward` line such as `Forwarding from 127.0.0.1:41231 -> 8080`."""
    match = _FORWARDING.match(line.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True)
class Forwarded:
    ports: dict[int, int]  # remote -> local

    def address(self, remote: int) -> str:
        return f"127.0.0.1:{self.ports[remote]}"


@contextlib.contextmanager
def port_forward(
    target: str, namespace: str, *remote_ports: int, context: str | None = None, timeout_s: float = 60.0
) -> Iterator[Forwarded]:
    """`kubectl port-forward TARGET :PORT...` on free local ports, for as long as the block runs.

    Yields once kubectl reports every port forwarded; raises PortForwardError with kubectl's own words when it
    exits first or says nothing within `timeout_s`.
    """
    command = [tool("kubectl"), "port-forward", "--namespace", namespace, target]
    if context:
        command[1:1] = ["--context", context]
    command += [f":{port}" for port in remote_ports]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ}, bufsize=1
    )
    try:
        yield Forwarded(_read_forwarded_ports(process, set(remote_ports), timeout_s, target))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _read_forwarded_ports(process: subprocess.Popen, wanted: set[int], timeout_s: float, target: str) -> dict[int, int]:
    assert process.stdout is not None
    ports: dict[int, int] = {}
    said: list[str] = []
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while set(ports) != wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PortForwardError(f"port-forward to {target} not ready within {timeout_s:.0f}s: {' '.join(said)}")
            if not selector.select(remaining):
                continue
            line = process.stdout.readline()
            if not line:
                process.wait(10)
                raise PortForwardError(
                    f"kubectl port-forward to {target} exited with {process.returncode}: {' '.join(said).strip()}"
                )
            said.append(line.strip())
            forwarded = forwarded_port(line)
            if forwarded is not None:
                ports[forwarded[1]] = forwarded[0]
    return ports


def run(*command: str, timeout_s: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """A helm or kubectl command; on failure the error carries its output."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
