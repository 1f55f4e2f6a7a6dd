"""Real parts for runner tests: a ``kalla serve`` process and a callback receiver.

Each test gets its own server process on 127.0.0.1 (a free port chosen by the
kernel), its own evidence root and state dir, and a real HTTP receiver running in
a thread. Waiting is always polling with a deadline, never a fixed sleep.

To hold a job in ``running`` deterministically, tests SIGSTOP the server's worker
processes (:meth:`Runner.pause_workers`): a job handed to a stopped worker stays
running until :meth:`Runner.resume_workers`, with no hooks in the runner itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

SRC = str(Path(__file__).resolve().parents[2] / "src")
MATCH_SQL = (
    "SELECT i.invoice_id, p.payment_id FROM left_src i "
    "JOIN right_src p ON i.invoice_id = p.reference_number"
)
FAST_CALLBACKS = {
    "KALLA_CALLBACK_BACKOFF_INITIAL_S": "0.02",
    "KALLA_CALLBACK_BACKOFF_MAX_S": "0.2",
    "KALLA_CALLBACK_ATTEMPTS": "20",
    "KALLA_CALLBACK_REDELIVERY_S": "0.3",
    "KALLA_CALLBACK_CONNECT_TIMEOUT_S": "2",
}


def wait_until(check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the callback receiver ----------------------------------------------------------------------


class Receiver:
    """A real HTTP server that records callbacks; ``status`` sets what it answers."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.status = 200
        self.calls: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/worker"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                payload = json.loads(body or b"null")
                kind = self.path.rsplit("/", 1)[-1]
                paths = (payload or {}).get("output_paths") or {}
                record = {
                    "kind": kind,
                    "path": self.path,
                    "body": payload,
                    "raw": body.decode(),
                    "files_exist": {k: Path(v).is_file() for k, v in paths.items() if v},
                    "status": receiver.status,
                }
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()
                with receiver._cond:
                    receiver.calls.append(record)
                    receiver._cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self, kind: str, run_id: str | None = None, ok_only: bool = True) -> list[dict]:
        with self._cond:
            return [
                c["body"]
                for c in self.calls
                if c["kind"] == kind
                and (run_id is None or c["body"].get("run_id") == run_id)
                and (not ok_only or c["status"] < 300)
            ]

    def wait_for(self, kind: str, run_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first ``kind`` callback of ``run_id`` that was answered 2xx."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.received(kind, run_id)
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind} callback for {run_id}; got {self.calls}")
                self._cond.wait(left)

    def call(self, kind: str, run_id: str) -> dict[str, Any]:
        """The raw record (with ``files_exist``) of the first delivered ``kind`` callback."""
        with self._cond:
            return next(
                c
                for c in self.calls
                if c["kind"] == kind and c["body"].get("run_id") == run_id and c["status"] < 300
            )


# --- the runner process -------------------------------------------------------------------------


class Runner:
    """A ``kalla serve`` subprocess (``python -m kalla.runner``) with its own folders."""

    def __init__(self, root: Path, flags: list[str], env: dict[str, str]) -> None:
        self.root = root
        self.evidence = root / "evidence"
        self.state = root / "state"
        self.flags = flags
        self.env = env
        self.log_path = root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._logs_before = ""

    def start(self, timeout: float = 30.0) -> Runner:
        self.evidence.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            self._logs_before += self.log_path.read_text()
        env = {**os.environ, **FAST_CALLBACKS, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
        log = self.log_path.open("wb")
        # One worker unless a test asks for more: worker start-up is CPU the tests share.
        defaults = [] if "--max-concurrent-jobs" in self.flags else ["--max-concurrent-jobs", "1"]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kalla.runner",
                "--port",
                "0",
                *defaults,
                "--evidence-root",
                str(self.evidence),
                "--state-dir",
                str(self.state),
                *self.flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        port = wait_until(self._port, timeout, "the runner to log its port")
        self.url = f"http://127.0.0.1:{port}"
        wait_until(self._healthy, timeout, "GET /health to answer 200")
        return self

    def _port(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"runner exited with {self.proc.returncode}:\n{self.logs()}")
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log_path.read_text())
        return int(m.group(1)) if m else None

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def logs(self) -> str:
        return self._logs_before + (self.log_path.read_text() if self.log_path.exists() else "")

    # --- HTTP ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=10, **kw)

    def post_job(self, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return self.request("POST", "/api/jobs", json=body, **kw)

    def status(self, run_id: str, **kw: Any) -> dict[str, Any]:
        response = self.request("GET", f"/api/jobs/{run_id}", **kw)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_state(self, run_id: str, *states: str, timeout: float = 20.0) -> dict[str, Any]:
        return wait_until(
            lambda: (s := self.status(run_id))["state"] in states and s,
            timeout,
            f"job {run_id} to be {'/'.join(states)}",
        )

    def metrics(self) -> dict[str, float]:
        text = self.request("GET", "/metrics").text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    # --- processes ----------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """The server's child processes (its job workers)."""
        assert self.proc is not None
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
        return pids

    def pause_workers(self, count: int) -> list[int]:
        """SIGSTOP the server's ``count`` workers (waits until that many exist)."""
        pids = wait_until(
            lambda: (p := self.worker_pids()) and len(p) >= count and p, 30, f"{count} workers"
        )
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self._paused = pids
        return pids

    def resume_workers(self) -> None:
        for pid in getattr(self, "_paused", []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        """Crash the server the hard way; its workers die with it (PDEATHSIG)."""
        assert self.proc is not None
        workers = self.worker_pids()
        self.proc.kill()
        self.proc.wait(10)
        for pid in workers:  # belt and braces for paused workers
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume_workers()
        workers = self.worker_pids()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- data and jobs ------------------------------------------------------------------------------


def write_sources(folder: Path, rows: int = 3) -> tuple[Path, Path]:
    """invoices (INV-1..n) and payments paying all but the last, plus one unknown reference."""
    folder.mkdir(parents=True, exist_ok=True)
    inv = folder / "invoices.csv"
    pay = folder / "payments.csv"
    inv_lines = ["invoice_id,amount"] + [f"INV-{i},{i}.00" for i in range(1, rows + 1)]
    pay_lines = (
        ["payment_id,reference_number,paid_amount"]
        + [f"PAY-{i},INV-{i},{i}.00" for i in range(1, rows)]
        + ["PAY-X,INV-UNKNOWN,1.00"]
    )
    inv.write_text("\n".join(inv_lines) + "\n")
    pay.write_text("\n".join(pay_lines) + "\n")
    return inv, pay


def job_body(
    left: Path | str, right: Path | str, callback_url: str, run_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    run_id = run_id or str(uuid.uuid4())
    body: dict[str, Any] = {
        "run_id": run_id,
        "callback_url": callback_url,
        "match_sql": MATCH_SQL,
        "sources": [
            {"alias": "left_src", "uri": str(left)},
            {"alias": "right_src", "uri": str(right)},
        ],
        "output_path": f"runs/{run_id}",
        "primary_keys": {"left_src": ["invoice_id"], "right_src": ["payment_id"]},
    }
    body.update(extra)
    return body


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def start_runner(tmp_path: Path) -> Iterator[Callable[..., Runner]]:
    """``start_runner(*flags, env={...}, root=...)`` starts a runner; all are stopped at the end."""
    started: list[Runner] = []

    def start(*flags: str, env: dict[str, str] | None = None, root: Path | None = None) -> Runner:
        runner = Runner(root or tmp_path / f"runner{len(started)}", list(flags), env or {})
        started.append(runner)
        return runner.start()

    yield start
    for runner in started:
        runner.close()


@pytest.fixture(scope="module")
def shared_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """One runner for a whole module, for tests that only look at answers to requests."""
    runner = Runner(tmp_path_factory.mktemp("shared"), ["--max-request-bytes", "4096"], {})
    runner.start()
    yield runner
    runner.close()


@pytest.fixture
def sources(start_runner: Callable[..., Runner], tmp_path: Path) -> tuple[Path, Path]:
    """Small invoice/payment CSVs inside the first runner's evidence root (an allowed root)."""
    return write_sources(tmp_path / "runner0" / "evidence" / "data")
