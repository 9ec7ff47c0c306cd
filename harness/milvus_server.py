"""Start a real Milvus standalone server (the `milvus` PyPI package's `milvus-server`) for tests.

Usage::

    with run_milvus_server(tmp_path) as uri:  # "http://127.0.0.1:PORT"
        client = MilvusClient(uri=uri)

Facts about milvus-server 2.3.5 this module is built around:

* Every `--*-port` option is only a starting point: the wrapper probes upward from it for a free port, so the port
  actually used is read back from the config file the wrapper writes.
* The embedded etcd ignores `--etcd-port` and always listens on 2379/2380 unless `ETCD_CONFIG_PATH` points at an etcd
  config, so one is written per server; otherwise a second server (or anything on 2379/2380) makes startup fail.
* The wrapper never notices its `milvus` child dying, and the child hangs in a SIGTERM shutdown for minutes, so the
  whole process group is watched and SIGKILLed if needed. Inserted data survives a SIGKILL.
* A SIGKILLed server leaves sessions in etcd that a restart must wait out, hence the shorter session TTL.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from pymilvus import MilvusClient

from harness.executables import venv_executable

__all__ = [
    "DEFAULT_ROOT_TOKEN",
    "MilvusServerError",
    "kill_milvus_server",
    "milvus_server_pids",
    "paused_milvus_server",
    "run_milvus_server",
]

# Options of milvus-server that name a listening port (milvus/data/config.yaml.template).
_PORT_OPTIONS = (
    "proxy_port",
    "etcd_port",
    "root_coord_port",
    "proxy_internal_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)
_START_ATTEMPTS = 3
_POLL_INTERVAL_S = 0.25
_SESSION_TTL_S = 10
# Milvus's built-in administrator, before anyone changes its password.
DEFAULT_ROOT_TOKEN = "root:Milvus"

_running: dict[str, int] = {}  # uri -> process group id


class MilvusServerError(RuntimeError):
    """The server did not start, or could not be stopped."""


@contextlib.contextmanager
def run_milvus_server(
    workdir: Path, *, timeout: float = 120.0, stop_grace: float = 10.0, authentication: bool = False
) -> Iterator[str]:
    """Run a Milvus server with its data under `workdir` (reused if it exists) and yield its `http://` URI.

    With `authentication`, every client needs a token: `DEFAULT_ROOT_TOKEN` until the test changes root's password.

    Ports are picked fresh for every start, so a restart on the same `workdir` keeps the data but changes the URI.
    Raises `MilvusServerError` with the server's log tail if it is not serving within `timeout` seconds. On exit the
    wrapper gets SIGINT (it stops the binary within a few seconds), then the group gets SIGKILL after `stop_grace`.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    failures: list[str] = []
    for _attempt in range(_START_ATTEMPTS):
        proc, uri, failure = _start_once(workdir, deadline, authentication)
        if uri is not None:
            break
        failures.append(failure)
        # A server that died early may have lost a port race (another process bound a port between our probe and
        # its bind), which a fresh set of ports fixes; running out of time is not worth repeating.
        if time.monotonic() >= deadline:
            break
    else:
        raise MilvusServerError(f"milvus-server failed to start {_START_ATTEMPTS} times:\n" + "\n\n".join(failures))
    if uri is None:
        raise MilvusServerError(f"milvus-server did not start within {timeout:.0f} s:\n" + "\n\n".join(failures))
    _running[uri] = proc.pid
    try:
        yield uri
    finally:
        _running.pop(uri, None)
        _stop_group(proc.pid, grace=stop_grace)
        proc.wait(timeout=10)


@contextlib.contextmanager
def paused_milvus_server(uri: str) -> Iterator[None]:
    """SIGSTOP every process of the server at `uri` for the block, SIGCONT after: a Milvus that is slow, not gone.

    Connections stay open and requests are accepted by the kernel, but nothing answers until the block ends.
    """
    pgid = _running.get(uri)
    if pgid is None:
        raise MilvusServerError(f"no server started by this module is running at {uri}")
    _signal_group(pgid, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal_group(pgid, signal.SIGCONT)


def kill_milvus_server(uri: str) -> None:
    """SIGKILL the server started by `run_milvus_server` at `uri` and wait until its processes are gone."""
    pgid = _running.get(uri)
    if pgid is None:
        raise MilvusServerError(f"no server started by this module is running at {uri}")
    _stop_group(pgid, grace=0.0)


def milvus_server_pids(uri: str) -> list[int]:
    """Live process ids (wrapper and `milvus` binary) of the server at `uri`, empty once it is gone."""
    pgid = _running.get(uri)
    return [] if pgid is None else _live_group_members(pgid)


def _start_once(
    workdir: Path, deadline: float, authentication: bool
) -> tuple[subprocess.Popen[bytes], str | None, str]:
    data_dir = workdir / "milvus"
    config_file = data_dir / "configs" / "milvus.yaml"
    # Leftovers from an earlier start would report stale ports or a binary that is not running.
    config_file.unlink(missing_ok=True)
    binary_log = data_dir / "logs" / "milvus-stderr.log"  # the wrapper creates it just before it spawns the binary
    binary_log.unlink(missing_ok=True)
    ports = _free_ports(len(_PORT_OPTIONS) + 1)
    wanted = dict(zip(_PORT_OPTIONS, ports, strict=False))
    etcd_peer_port = ports[-1]
    etcd_config = workdir / "embed-etcd.yaml"
    etcd_client_url = f"http://127.0.0.1:{wanted['etcd_port']}"
    etcd_peer_url = f"http://127.0.0.1:{etcd_peer_port}"
    etcd_config.write_text(
        "name: default\n"
        f"listen-client-urls: {etcd_client_url}\n"
        f"advertise-client-urls: {etcd_client_url}\n"
        f"listen-peer-urls: {etcd_peer_url}\n"
        f"initial-advertise-peer-urls: {etcd_peer_url}\n"
        f"initial-cluster: default={etcd_peer_url}\n"
        # Keeps etcd's chatter out of milvus-stderr.log, whose tail explains failed starts.
        f"log-outputs: [{data_dir / 'logs' / 'etcd.log'}]\n"
    )
    command = [_milvus_server_executable(), "--data", str(data_dir)]
    # A hard-killed server leaves its coordinator sessions in etcd, and a restart waits for them to expire (about a
    # minute with the default 30 s TTL).
    command += ["--extra-config", f"common.session.ttl={_SESSION_TTL_S}"]
    if authentication:
        command += ["--authorization-enabled", "true"]
    for option, port in wanted.items():
        command += ["--" + option.replace("_", "-"), str(port)]
    log_path = workdir / "milvus-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env={**os.environ, "ETCD_CONFIG_PATH": str(etcd_config)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri: str | None = None
    failure = ""
    polls_without_binary = 0
    while True:
        if proc.poll() is not None:
            failure = f"milvus-server exited with status {proc.returncode}"
            break
        if binary_log.exists() and len(_live_group_members(proc.pid)) < 2:
            # Twice in a row, so the moment between the wrapper creating the log and forking does not count.
            polls_without_binary += 1
            if polls_without_binary >= 2:
                failure = "the milvus process died (the milvus-server wrapper does not notice)"
                break
        else:
            polls_without_binary = 0
        actual = _configured_ports(config_file) if uri is None else None
        if actual is not None:
            if actual["etcd_port"] != wanted["etcd_port"]:
                # The embedded etcd listens where our etcd config says, so the client would never reach it.
                failure = f"etcd port {wanted['etcd_port']} was taken before milvus-server could use it"
                break
            uri = f"http://127.0.0.1:{actual['proxy_port']}"
        if uri is not None and _answers(uri, DEFAULT_ROOT_TOKEN if authentication else ""):
            return proc, uri, ""
        if time.monotonic() > deadline:
            failure = f"not serving {uri or '(no port chosen yet)'} by the deadline"
            break
        time.sleep(_POLL_INTERVAL_S)
    _stop_group(proc.pid, grace=0.0)
    proc.wait(timeout=10)
    return proc, None, f"{failure}\n{_log_tail(workdir)}"


def _milvus_server_executable() -> str:
    found = venv_executable("milvus-server")
    if found is None:
        raise MilvusServerError("milvus-server not found; install the test extras (pip install -e '.[test]')")
    return found


def _free_ports(count: int) -> list[int]:
    # Below the kernel's ephemeral range, so outgoing connections made meanwhile cannot take them.
    low = 20000
    try:
        high = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        high = 32768
    ports: list[int] = []
    for port in random.sample(range(low, max(high, low + 1000)), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise MilvusServerError(f"could not find {count} free ports in {low}-{high}")


def _configured_ports(config_file: Path) -> dict[str, int] | None:
    """Ports the wrapper actually chose, from the milvus.yaml it generated; None until it is fully written."""
    try:
        config = yaml.safe_load(config_file.read_text())
        return {
            "proxy_port": int(config["proxy"]["port"]),
            "etcd_port": int(str(config["etcd"]["endpoints"]).rsplit(":", 1)[1]),
        }
    except (OSError, yaml.YAMLError, KeyError, TypeError, IndexError, ValueError):
        return None


def _answers(uri: str, token: str) -> bool:
    try:
        client = MilvusClient(uri=uri, token=token, timeout=5, dedicated=True)
    except Exception:  # noqa: BLE001 - any failure just means "not yet"
        return False
    try:
        client.list_collections(timeout=5)
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def _live_group_members(pgid: int) -> list[int]:
    """Processes in the group that are not zombies; the milvus binary is a grandchild we cannot wait() for."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat_file.parent.name))
    return members


def _stop_group(pgid: int, *, grace: float) -> None:
    if grace > 0:
        # SIGINT is the wrapper's own clean stop: it terminates, kills after 1 s and reaps the milvus binary. SIGTERM
        # would kill only the wrapper and leave the binary hanging in its shutdown.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pgid, signal.SIGINT)
        if _wait_group_gone(pgid, grace):
            return
    _signal_group(pgid, signal.SIGKILL)
    if not _wait_group_gone(pgid, 30.0):
        raise MilvusServerError(f"milvus-server process group {pgid} survived SIGKILL: {_live_group_members(pgid)}")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _live_group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _log_tail(workdir: Path, lines: int = 25) -> str:
    parts = []
    for path in (
        workdir / "milvus-server.log",
        workdir / "milvus" / "logs" / "milvus-stderr.log",
        workdir / "milvus" / "logs" / "milvus-stdout.log",
    ):
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} (last {len(tail)} lines) ---\n" + "\n".join(line[:400] for line in tail))
    return "\n".join(parts) or f"(no logs under {workdir})"


@atexit.register
def _kill_leftovers() -> None:
    # A test run that dies without unwinding the context manager must not leave servers holding ports.
    for pgid in list(_running.values()):
        _signal_group(pgid, signal.SIGKILL)
