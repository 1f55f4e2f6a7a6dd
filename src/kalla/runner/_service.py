"""The runner proper: accepts jobs, runs at most N at once, reports their outcome.

State lives in the :class:`JobStore`; the in-memory part is only which jobs are
running in which worker. That is what makes a restart safe: on start, jobs the
store says were running are queued again (their evidence is published atomically,
so a half-finished run was never visible) and undelivered callbacks are resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..connectors import scrub, secrets_in
from ..errors import (
    JobNotCancellable,
    JobNotFound,
    QueueFull,
    RunIdConflict,
    ShuttingDown,
)
from ._admission import admit
from ._callbacks import CallbackSender
from ._executor import Worker, WorkerOutcome, WorkerPool
from ._metrics import RunnerMetrics
from ._models import (
    CallbackOutputPaths,
    CompletionCallback,
    ErrorCallback,
    JobAccepted,
    JobState,
    JobStatus,
    MatchingProgress,
    ReadyStatus,
    RunnerJobRequest,
    StagingProgress,
    WritingProgress,
)
from ._store import JobRecord, JobStore, canonical_json
from ._worker import WorkerJob

__all__ = ["JobRunner"]

log = logging.getLogger("kalla.runner")


@dataclass
class _Running:
    """A job this process is running now."""

    run_id: str
    task: asyncio.Task[None] | None = None
    worker: Worker | None = None
    cancelled: bool = False
    # Progress is kept in memory only: it is worthless after a crash (the job re-runs).
    stage: str | None = None
    progress: float | None = None
    interrupted: bool = False  # killed by shutdown: goes back to the queue, no callback

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.kill()


class JobRunner:
    """Admission, the bounded queue, the dispatcher and job outcomes."""

    def __init__(self, settings: Settings, metrics: RunnerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = JobStore(settings.store_path)
        self.callbacks = CallbackSender(self.store, settings, metrics)
        self.pool = WorkerPool(settings.max_concurrent_jobs, settings.worker_max_jobs)
        self.shutting_down = False
        self._running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.evidence_root.mkdir(parents=True, exist_ok=True)
        requeued = self.store.requeue()
        if requeued:
            log.warning(
                "re-running %d job(s) interrupted by the previous shutdown or crash", requeued
            )
        await self.pool.start()
        self.callbacks.start()
        self._dispatcher = asyncio.create_task(self._dispatch())
        self._refresh_gauges()

    async def stop(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, requeue the rest."""
        self.shutting_down = True
        grace = self.settings.shutdown_grace_s
        deadline = time.monotonic() + grace
        if self._dispatcher:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        tasks = [r.task for r in self._running.values() if r.task]
        if tasks:
            log.info("waiting up to %.0f s for %d running job(s)", grace, len(tasks))
            await asyncio.wait(tasks, timeout=grace)
        for running in list(self._running.values()):
            log.warning("job %s did not finish in the grace period; it will re-run", running.run_id)
            running.interrupted = True
            running.stop()
        leftover = [r.task for r in self._running.values() if r.task]
        if leftover:
            await asyncio.wait(leftover, timeout=5)
        await self.callbacks.drain(max(deadline - time.monotonic(), 1.0))
        await self.callbacks.close()
        await self.pool.close()
        self.store.close()

    # --- API operations -------------------------------------------------------------------------

    def submit(self, request: RunnerJobRequest) -> tuple[JobAccepted, bool]:
        """Accept ``request``; returns the answer and whether the job is new (202) or known (200)."""
        run_id = str(request.run_id)
        body = canonical_json(request.model_dump(mode="json", by_alias=True))
        existing = self.store.get(run_id)
        if existing is not None:
            return self._same_or_conflict(existing, body), False
        run_dir = admit(request, self.settings)
        if self.shutting_down:
            self.metrics.jobs_rejected.labels("shutting_down").inc()
            raise ShuttingDown("the runner is shutting down; submit the job elsewhere or later")
        counts = self.store.counts()
        if counts[JobState.QUEUED] >= self.settings.queue_capacity:
            self.metrics.jobs_rejected.labels("queue_full").inc()
            raise QueueFull(
                f"the job queue is full ({self.settings.queue_capacity} jobs waiting); retry later"
            )
        self.store.add(run_id, _digest(body), body, str(run_dir))
        log.info("accepted job %s: %s", run_id, _describe(request))
        self._refresh_gauges()
        self._wake.set()
        return JobAccepted(run_id=request.run_id), True

    def _same_or_conflict(self, existing: JobRecord, body: str) -> JobAccepted:
        if existing.body_hash != _digest(body):
            raise RunIdConflict(
                f"run_id {existing.run_id} was already accepted with a different body; "
                "use a new run_id"
            )
        return JobAccepted(run_id=existing.run_id)  # type: ignore[arg-type]

    def status(self, run_id: str) -> JobStatus:
        record = self.store.get(run_id)
        if record is None:
            raise JobNotFound(f"no job with run_id {run_id}")
        status = record.to_status()
        running = self._running.get(run_id)
        if running is not None and status.state is JobState.RUNNING:
            status.stage, status.progress = running.stage, running.progress
        return status

    def cancel(self, run_id: str) -> JobStatus:
        """Cancel a queued or running job; its error callback (code ``cancelled``) is queued."""
        record = self.store.get(run_id)
        if record is None:
            raise JobNotFound(f"no job with run_id {run_id}")
        if record.state.terminal:
            raise JobNotCancellable(f"job {run_id} already {record.state.value}; nothing to cancel")
        error = ErrorCallback(
            run_id=record.run_id,  # type: ignore[arg-type]
            error="the job was cancelled",
            code="cancelled",
            stage=self._stage_of(run_id),
        )
        url = _callback_url(record)
        if self.store.finish(run_id, JobState.CANCELLED, error, url, error.stage):
            self.metrics.jobs_cancelled.inc()
            running = self._running.get(run_id)
            if running is not None:
                running.cancelled = True
                running.stop()
            log.info("cancelled job %s", run_id)
            self.callbacks.wake()
            self._refresh_gauges()
        return self.status(run_id)

    def readiness(self) -> ReadyStatus:
        counts = self.store.counts()
        reason = None
        if self.shutting_down:
            reason = "shutting_down"
        elif counts[JobState.QUEUED] >= self.settings.queue_capacity:
            reason = "queue_full"
        elif not self.store.check_writable():
            reason = "store_unwritable"
        return ReadyStatus(
            ready=reason is None,
            reason=reason,
            queued=counts[JobState.QUEUED],
            running=counts[JobState.RUNNING],
        )

    # --- running jobs ---------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            free = self.settings.max_concurrent_jobs - len(self._running)
            if free > 0:
                for record in self.store.next_queued(free):
                    if self.store.start(record.run_id):
                        running = _Running(record.run_id)
                        self._running[record.run_id] = running
                        running.task = asyncio.create_task(self._run(record, running))
            self._refresh_gauges()
            await self._wake.wait()
            self._wake.clear()

    async def _run(self, record: JobRecord, running: _Running) -> None:
        started = time.monotonic()
        request = RunnerJobRequest.model_validate_json(record.request)
        secrets = [s for src in request.sources for s in secrets_in(src.uri)]
        worker: Worker | None = None
        try:
            worker = running.worker = await self.pool.acquire()
            if running.cancelled:
                worker.kill()
            log.info(
                "running job %s in worker %d (attempt %d)",
                record.run_id,
                worker.pid,
                record.attempts + 1,
            )
            job = WorkerJob(
                request=request.model_dump(mode="json", by_alias=True),
                run_dir=record.run_dir,
                memory_limit=self.settings.job_memory_limit,
                rerun=record.attempts > 0,
                engine=self.settings.engine,
                ray_address=self.settings.ray_address,
                ray_partitions=self.settings.ray_partitions,
            )
            outcome = await worker.run(
                job, record.run_id, secrets, lambda ev: self._on_progress(request, ev)
            )
            self._conclude(record, request, running, outcome, secrets)
            self.metrics.job_duration.observe(time.monotonic() - started)
        except Exception:
            log.exception("job %s: the runner failed to run it", record.run_id)
            if worker is not None:
                worker.kill()
            self._fail(
                record,
                request,
                {"code": "execution_failed", "error": "the runner failed to run the job"},
                secrets,
            )
        finally:
            if worker is not None:
                await self.pool.release(worker)
            self._running.pop(record.run_id, None)
            self._refresh_gauges()
            self._wake.set()

    def _conclude(
        self,
        record: JobRecord,
        request: RunnerJobRequest,
        running: _Running,
        outcome: WorkerOutcome,
        secrets: list[str],
    ) -> None:
        if running.cancelled:
            return  # cancel() already recorded the outcome and queued the error callback
        if running.interrupted:
            self.store.requeue(record.run_id)
            return
        if outcome.result is not None:
            completion = CompletionCallback(
                run_id=request.run_id,
                matched_count=outcome.result["matched_count"],
                unmatched_left_count=outcome.result["unmatched_left_count"],
                unmatched_right_count=outcome.result["unmatched_right_count"],
                output_paths=CallbackOutputPaths(**outcome.result["output_paths"]),
            )
            stage = self._stage_of(record.run_id)
            if self.store.finish(
                record.run_id, JobState.COMPLETED, completion, request.callback_url, stage
            ):
                self.metrics.jobs_completed.inc()
                log.info("job %s completed: %d matched", record.run_id, completion.matched_count)
                self.callbacks.wake()
            return
        error = outcome.error or _death(outcome.returncode)
        self._fail(record, request, error, secrets)

    def _fail(
        self,
        record: JobRecord,
        request: RunnerJobRequest,
        error: dict[str, Any],
        secrets: list[str],
    ) -> None:
        callback = ErrorCallback(
            run_id=request.run_id,
            error=scrub(str(error.get("error", "")), secrets),
            code=str(error.get("code", "execution_failed")),
            stage=error.get("stage") or self._stage_of(record.run_id),
            retryable=bool(error.get("retryable", False)),
        )
        url = request.callback_url
        if self.store.finish(record.run_id, JobState.FAILED, callback, url, callback.stage):
            self.metrics.jobs_failed.inc()
            log.warning("job %s failed: [%s] %s", record.run_id, callback.code, callback.error)
            self.callbacks.wake()

    def _stage_of(self, run_id: str) -> str | None:
        running = self._running.get(run_id)
        return running.stage if running else None

    def _on_progress(self, request: RunnerJobRequest, event: dict[str, Any]) -> None:
        stage, progress = event.get("stage"), float(event.get("progress", 0.0))
        if stage is None:
            return
        callback_stage = "writing_results" if stage == "publishing" else stage
        running = self._running.get(str(request.run_id))
        if running is not None:
            running.stage, running.progress = callback_stage, progress
        payload: StagingProgress | MatchingProgress | WritingProgress
        if callback_stage == "staging":
            payload = StagingProgress(
                run_id=request.run_id, progress=progress, source=event.get("source")
            )
        elif callback_stage == "matching":
            payload = MatchingProgress(
                run_id=request.run_id, progress=progress, matched_count=event.get("matched_count")
            )
        else:
            payload = WritingProgress(run_id=request.run_id, progress=progress)
        self.callbacks.send_progress(request.callback_url, payload)

    def _refresh_gauges(self) -> None:
        counts = self.store.counts()
        self.metrics.queued_jobs.set(counts[JobState.QUEUED])
        self.metrics.active_jobs.set(len(self._running))


def _callback_url(record: JobRecord) -> str:
    return RunnerJobRequest.model_validate_json(record.request).callback_url


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _death(returncode: int | None) -> dict[str, Any]:
    """The error of a worker that died without reporting one."""
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == 9:
            return {
                "code": "resources_exhausted",
                "retryable": True,
                "error": "the job's worker process was killed (SIGKILL; most often the "
                "kernel's out-of-memory killer)",
            }
        return {
            "code": "execution_failed",
            "error": f"the job's worker process died from signal {sig}",
        }
    return {
        "code": "execution_failed",
        "error": f"the job's worker process exited (code {returncode}) without a result",
    }


def _describe(request: RunnerJobRequest) -> str:
    sources = ", ".join(f"{s['alias']}={s['uri']}" for s in request.redacted()["sources"])
    return f"sources [{sources}], callback {request.callback_url}"
