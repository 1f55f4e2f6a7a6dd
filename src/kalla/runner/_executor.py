"""Worker processes: started ahead of time, one job at a time each, killed to cancel.

:class:`WorkerPool` keeps up to ``size`` workers whose engine import is done, so a
job starts in milliseconds. A worker goes back to the pool after a job that ended
normally, and is retired after ``max_jobs`` jobs; one that died or was killed is
replaced. :class:`Worker` drives one child through the protocol of :mod:`._worker`
and turns whatever happens (result, error, crash, kill) into a :class:`WorkerOutcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..connectors import scrub
from ._worker import WorkerJob, WorkerMessage

__all__ = ["Worker", "WorkerOutcome", "WorkerPool"]

log = logging.getLogger("kalla.runner.worker")

_LINE_LIMIT = 16 * 1024 * 1024  # one protocol line (an error message) may be long, never huge


@dataclass
class WorkerOutcome:
    """How a job ended: a completion, a typed error, or the worker's death (``returncode``)."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    returncode: int | None = None
    stderr_tail: list[str] = field(default_factory=list)


class Worker:
    """One child process that runs jobs one after the other."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.jobs_done = 0
        self._secrets: list[str] = []
        self._tail: deque[str] = deque(maxlen=20)
        self._label = f"worker {proc.pid}"
        self._stderr_task = asyncio.create_task(self._pump_stderr())

    @classmethod
    async def spawn(cls) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kalla.runner._worker",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
            start_new_session=True,  # a Ctrl-C in the runner's terminal is the runner's to handle
        )
        return cls(proc)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = scrub(line.decode("utf-8", "replace").rstrip(), self._secrets)
            self._tail.append(text)
            log.info("%s: %s", self._label, text)

    async def run(
        self,
        job: WorkerJob,
        run_id: str,
        secrets: list[str],
        on_progress: Callable[[dict[str, Any]], None],
    ) -> WorkerOutcome:
        """Hand ``job`` to the worker; wait for its result or error, or for the worker's death."""
        self._secrets = secrets
        self._label = f"job {run_id} (worker {self.pid})"
        self._tail.clear()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        outcome = WorkerOutcome()
        try:
            self.proc.stdin.write(job.model_dump_json().encode() + b"\n")
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died already; reading below finds out how
        while line := await self.proc.stdout.readline():
            try:
                msg = WorkerMessage.model_validate_json(line)
            except ValueError:
                continue  # not protocol: ignore rather than trust it
            if msg.type == "progress":
                on_progress(msg.data)
            elif msg.type == "result":
                outcome.result = msg.data
                break
            elif msg.type == "error":
                outcome.error = msg.data
                break
        else:  # end of output: the worker died mid-job
            outcome.returncode = await self.proc.wait()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
        self.jobs_done += 1
        self._label = f"worker {self.pid}"
        outcome.stderr_tail = list(self._tail)
        return outcome

    def kill(self) -> None:
        """Stop the worker now: its query dies with it."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)

    async def retire(self) -> None:
        """Let the worker exit (it sees end of input), or kill it if it will not."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(2):
                await self.proc.wait()
        except TimeoutError:
            self.kill()
            await self.proc.wait()
        self._stderr_task.cancel()


class WorkerPool:
    """Up to ``size`` workers; idle ones wait, warm, for the next job."""

    def __init__(self, size: int, max_jobs: int) -> None:
        self._size = size
        self._max_jobs = max_jobs
        self._idle: deque[Worker] = deque()
        self._busy = 0
        self._refill: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._kick()

    def _kick(self) -> None:
        if self._closed or (self._refill and not self._refill.done()):
            return
        self._refill = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        while not self._closed and len(self._idle) + self._busy < self._size:
            try:
                worker = await Worker.spawn()
            except OSError:
                log.exception("cannot start a worker process")
                return
            if self._closed:
                await worker.retire()
                return
            self._idle.append(worker)

    async def acquire(self) -> Worker:
        """A worker for one job: an idle warm one when there is one, else a new process."""
        self._busy += 1
        try:
            while self._idle:
                worker = self._idle.popleft()
                if worker.alive:
                    return worker
            return await Worker.spawn()
        except BaseException:
            self._busy -= 1
            raise
        finally:
            self._kick()

    async def release(self, worker: Worker) -> None:
        """Take a worker back after a job: keep it warm, or retire it (dead, killed, or old)."""
        self._busy -= 1
        if worker.alive and not self._closed and worker.jobs_done < self._max_jobs:
            self._idle.append(worker)
        else:
            if worker.alive:
                await worker.retire()
            self._kick()

    async def close(self) -> None:
        self._closed = True
        if self._refill:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
        idle, self._idle = list(self._idle), deque()
        await asyncio.gather(*(w.retire() for w in idle), return_exceptions=True)
