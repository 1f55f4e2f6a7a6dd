"""The job worker: a child process that runs jobs one at a time, isolated from the runner.

Why a separate process: a job that runs out of memory, segfaults in native code or
is cancelled takes only its worker down; the kernel frees everything it held, and
killing the worker stops its query at once (DataFusion has no cancel call). The
engine import (about a second of CPU) happens once per worker, not once per job;
the runner retires a worker after ``worker_max_jobs`` jobs so a slow leak cannot grow.

Protocol (``python -m kalla.runner._worker <parent pid>``): the parent writes one
:class:`WorkerJob` JSON line to stdin per job; the worker answers with
:class:`WorkerMessage` JSON lines on its original stdout: ``progress`` events, then
exactly one ``result`` or ``error``. Anything else the job prints goes to stderr,
which the parent scrubs of secrets before logging. End of input means: exit.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel

__all__ = ["WorkerJob", "WorkerMessage", "main"]

_PR_SET_PDEATHSIG = 1


class WorkerJob(BaseModel):
    """What the parent sends: the job, where its evidence goes, and whether it is a re-run."""

    request: dict[str, Any]
    run_dir: str
    memory_limit: int | None = None
    rerun: bool = False
    engine: str = "local"
    ray_address: str | None = None
    ray_partitions: int | None = None


class WorkerMessage(BaseModel):
    """One line from the worker: ``progress`` (engine event), ``result`` or ``error``."""

    type: Literal["ready", "progress", "result", "error"]
    data: dict[str, Any] = {}


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to kill us if the runner dies (a kill -9 must not leave orphans running)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _send(out: IO[str], kind: str, data: dict[str, Any]) -> None:
    out.write(WorkerMessage(type=kind, data=data).model_dump_json() + "\n")  # type: ignore[arg-type]
    out.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The protocol owns the real stdout; whatever else writes to stdout lands on stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    _die_with_parent(int(argv[0]))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    # The heavy import happens here, while the worker waits as a spare.
    from .. import engine  # noqa: F401

    _send(out, "ready", {})
    while line := sys.stdin.readline():
        if line.strip():
            _run_one(WorkerJob.model_validate_json(line), out)
    return 0  # the runner shut down or no longer needs this worker


def _run_one(job: WorkerJob, out: IO[str]) -> None:
    from ..engine import run_job
    from ..errors import EvidenceExists, ExecutionFailed, KallaError
    from ..job import JobRequest
    from ..progress import ProgressEvent

    request = JobRequest.model_validate(job.request)
    run_dir = Path(job.run_dir)

    def progress(event: ProgressEvent) -> None:
        _send(out, "progress", event.model_dump(mode="json", exclude_none=True))

    try:
        ray_options = None
        if job.engine == "ray":
            from ..distributed import RayOptions

            ray_options = RayOptions(address=job.ray_address, partitions=job.ray_partitions)
        result = run_job(
            request, run_dir, memory_limit=job.memory_limit, progress=progress,
            engine=job.engine, ray_options=ray_options,
        )  # fmt: skip
        _send(out, "result", result.to_completion())
    except EvidenceExists as exc:
        recovered = _recover(request, run_dir) if job.rerun else None
        if recovered is not None:
            _send(out, "result", recovered)
        else:
            _send(out, "error", _error_dict(exc))
    except KallaError as exc:
        _send(out, "error", _error_dict(exc))
    except Exception as exc:  # the engine should raise KallaErrors only; never die silently
        logging.getLogger("kalla.runner.worker").exception("unexpected error in job")
        err = ExecutionFailed(f"the job failed unexpectedly ({type(exc).__name__})")
        _send(out, "error", _error_dict(err))


def _error_dict(exc: Any) -> dict[str, Any]:
    return {"code": exc.code, "error": exc.message, "stage": exc.stage, "retryable": exc.retryable}


def _recover(request: Any, run_dir: Path) -> dict[str, Any] | None:
    """The completion of a run this job already published before the runner crashed."""
    from ..evidence import read_metadata
    from ..evidence._models import MATCHED, UNMATCHED, RunStatus

    meta = read_metadata(run_dir)
    if meta is None or meta.run_id != request.run_id or meta.status is not RunStatus.COMPLETED:
        return None
    return {
        "run_id": str(meta.run_id),
        "matched_count": meta.matched_count or 0,
        "unmatched_left_count": meta.unmatched_left_count or 0,
        "unmatched_right_count": meta.unmatched_right_count or 0,
        "output_paths": {
            "matched": str(run_dir / MATCHED),
            "unmatched_left": str(run_dir / UNMATCHED["left"]),
            "unmatched_right": str(run_dir / UNMATCHED["right"]),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
