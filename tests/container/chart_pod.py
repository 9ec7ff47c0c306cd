"""The predictor pod as the chart renders it, turned into a `podman run` (or `docker run`) command line.

Everything the container gets comes from `helm template` of a scenario, never from a copy: the arguments and
environment, the user and groups, the read-only root with a tmpfs at each emptyDir, the dropped capabilities,
no privilege escalation, the memory limit, the ports. The one departure is Milvus: the chart points at a Milvus
server, the image test at a milvus-lite file on a mounted volume (`with_milvus_lite`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "image-search"
CONTAINERS_CONF = REPO / "hack" / "podman" / "containers.conf"
SERVER_CONTAINER = "kserve-container"
# Where the chart passes the Milvus URI; the server takes a milvus-lite file path from it as well.
MILVUS_URI_VARIABLE = "IMAGE_SEARCH_MILVUS_URI"

_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_FACTORS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})


def quantity_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes memory quantity such as 2Gi or 512Mi."""
    match = _QUANTITY.match(str(quantity))
    if match is None:
        raise ValueError(f"unsupported quantity {quantity!r}")
    return int(match.group(1)) * _FACTORS[match.group(2)]


@dataclass(frozen=True)
class ChartPod:
    args: tuple[str, ...]
    env: dict[str, str]
    user: int
    group: int
    supplementary_groups: tuple[int, ...]
    read_only_root: bool
    capabilities_dropped: tuple[str, ...]
    no_new_privileges: bool
    empty_dirs: dict[str, int]  # mount path -> size limit in bytes
    memory_limit: int | None
    ports: dict[str, int]  # name -> container port
    readiness_path: str
    volumes: tuple[tuple[str, str], ...] = field(default=())  # (host path, container path)

    def flag(self, name: str) -> str | None:
        prefix = f"--{name}="
        return next((arg.removeprefix(prefix) for arg in self.args if arg.startswith(prefix)), None)

    def with_milvus_lite(self, host_dir: Path, container_dir: str = "/data") -> ChartPod:
        """The same pod with a milvus-lite file on a volume in place of the chart's Milvus server."""
        uri = f"{container_dir}/milvus.db"
        env = {**self.env, MILVUS_URI_VARIABLE: uri}
        args = tuple(arg for arg in self.args if not arg.startswith("--milvus-uri="))
        return replace(self, args=args, env=env, volumes=(*self.volumes, (str(host_dir), container_dir)))

    def milvus_uri(self) -> str:
        return self.flag("milvus-uri") or self.env[MILVUS_URI_VARIABLE]


def server_pod(inference_service: dict) -> ChartPod:
    """The stable predictor's pod of a rendered InferenceService."""
    predictor = inference_service["spec"]["predictor"]
    (container,) = [c for c in predictor["containers"] if c["name"] == SERVER_CONTAINER]
    pod_security = predictor.get("securityContext", {})
    security = container.get("securityContext", {})
    env = {}
    for item in container.get("env", []):
        if "value" not in item:
            raise ValueError(f"env {item['name']} comes from {list(item)}; only literal values can be passed on")
        env[item["name"]] = str(item["value"])
    volumes = {volume["name"]: volume for volume in predictor.get("volumes", [])}
    empty_dirs = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" not in volume:
            raise ValueError(f"volume {mount['name']} is not an emptyDir; the image test only has tmpfs")
        empty_dirs[mount["mountPath"]] = quantity_bytes(volume["emptyDir"].get("sizeLimit", "1Gi"))
    limits = container.get("resources", {}).get("limits", {})
    groups = [pod_security["fsGroup"]] if "fsGroup" in pod_security else []
    return ChartPod(
        args=tuple(container.get("args", [])),
        env=env,
        user=int(security.get("runAsUser", pod_security["runAsUser"])),
        group=int(security.get("runAsGroup", pod_security["runAsGroup"])),
        supplementary_groups=tuple(int(g) for g in groups + pod_security.get("supplementalGroups", [])),
        read_only_root=bool(security.get("readOnlyRootFilesystem", False)),
        capabilities_dropped=tuple(security.get("capabilities", {}).get("drop", [])),
        no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        empty_dirs=empty_dirs,
        memory_limit=quantity_bytes(limits["memory"]) if "memory" in limits else None,
        ports={port["name"]: int(port["containerPort"]) for port in container.get("ports", [])},
        readiness_path=container["readinessProbe"]["httpGet"]["path"],
    )


def find_helm() -> str | None:
    local = REPO / "bin" / "helm"
    return str(local) if local.exists() else shutil.which("helm")


def render_pod(helm: str, scenario: str = "cpu", *set_values: str) -> ChartPod:
    command = [helm, "template", "image-search", str(CHART), "--namespace", "image-search", "--skip-tests"]
    command += ["--values", str(CHART / "ci" / f"{scenario}-values.yaml")]
    for value in set_values:
        command += ["--set", value]
    rendered = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    (isvc,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "InferenceService"]
    return server_pod(isvc)


def engine() -> str:
    return os.environ.get("CONTAINER_ENGINE", "podman")


def engine_env() -> dict[str, str]:
    """The environment the engine runs with; podman gets the settings hack/container-engine.sh gives it."""
    env = dict(os.environ)
    if engine() == "podman":
        env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def run_args(
    pod: ChartPod,
    image: str,
    *,
    name: str | None = None,
    publish: bool = False,
    command: tuple[str, ...] | None = None,
) -> list[str]:
    """`run` arguments for the pod's container: the chart's args by default, or `command` in place of the
    entrypoint (the same image, user and restrictions, for the one-off `image-search index` and friends)."""
    args = ["run", "--rm" if name is None else "--detach"]
    if name is not None:
        args += ["--name", name]
    args += ["--user", f"{pod.user}:{pod.group}"]
    for group in pod.supplementary_groups:
        args += ["--group-add", str(group)]
    if pod.read_only_root:
        args.append("--read-only")
        if engine() == "podman":
            # podman adds its own tmpfs at /tmp, /run and /var/tmp to a read-only container; the pod has only its
            # emptyDirs.
            args.append("--read-only-tmpfs=false")
    for path, size in pod.empty_dirs.items():
        # An emptyDir is writable by every user, as a tmpfs of mode 1777 is.
        args += ["--tmpfs", f"{path}:rw,size={size},mode=1777"]
    for capability in pod.capabilities_dropped:
        args += ["--cap-drop", capability]
    if pod.no_new_privileges:
        args += ["--security-opt", "no-new-privileges"]
    if pod.memory_limit is not None:
        args += ["--memory", str(pod.memory_limit)]
    for host, container in pod.volumes:
        args += ["--volume", f"{host}:{container}"]
    for key, value in pod.env.items():
        args += ["--env", f"{key}={value}"]
    if publish:
        for port in pod.ports.values():
            args += ["--publish", f"127.0.0.1::{port}"]
    if command is None:
        return [*args, image, *pod.args]
    return [*args, "--entrypoint", command[0], image, *command[1:]]
