"""A real two-node Ray cluster on 127.0.0.1 for the Ray engine's tests, started once.

``ray start --head`` plus a second node (``ray start --address``), token auth as Ray 2.60
requires (a fresh token in the environment, never ``~/.ray``), small CPU and memory
settings; stopped at the end by signalling the process groups this fixture created.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Ray reads its auth token once per process, so the token is chosen before Ray is imported.
_TOKEN = secrets.token_hex(32)
_SAVED = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=_TOKEN)
pytest.importorskip("ray")

_NODE = Path(__file__).with_name("_ray_node.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(_NODE), "start", "--block", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig is signal.SIGTERM:  # the node's own children may linger: end the group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    import ray

    from tests.distributed._ray_node import loopback_only

    temp = Path(tempfile.mkdtemp(prefix="kray", dir="/tmp"))  # short: Ray's socket paths
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats",
              "--temp-dir", str(temp), "--object-store-memory", str(150 << 20)]  # fmt: skip
    address = f"127.0.0.1:{port}"
    procs = [
        _start(["--head", "--port", str(port), "--include-dashboard=false", *common], env,
               temp / "head.log")
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise RuntimeError((temp / "head.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        procs.append(_start(["--address", address, *common], env, temp / "node.log"))
        loopback_only()
        ray.init(address=address, namespace="kalla", log_to_driver=False)
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError((temp / "node.log").read_text()[-2000:])
            time.sleep(0.1)
        yield address
    finally:
        ray.shutdown()
        for proc in reversed(procs):
            _stop(proc)
        for key, value in _SAVED.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
