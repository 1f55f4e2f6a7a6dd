"""Bounded queue, /ready, concurrency bound, cancel, and a crashing worker."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .conftest import Receiver, Runner, job_body, wait_until


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A killed child stays a zombie until reaped; that is gone enough.
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_queue_full_ready_flips_and_cancel(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner("--queue-capacity", "1")
    assert runner.request("GET", "/ready").status_code == 200
    (worker,) = runner.pause_workers(1)

    a, b, c = (job_body(*sources, receiver.url) for _ in range(3))
    assert runner.post_job(a).status_code == 202
    runner.wait_state(a["run_id"], "running")
    assert runner.post_job(b).status_code == 202
    assert runner.status(b["run_id"])["state"] == "queued"

    full = runner.post_job(c)  # answered at once, not blocked behind the queue
    assert full.status_code == 503
    assert full.json()["code"] == "queue_full"
    assert int(full.headers["retry-after"]) > 0
    ready = runner.request("GET", "/ready")
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "reason": "queue_full", "queued": 1, "running": 1}
    metrics = runner.metrics()
    assert metrics["kalla_runner_active_jobs"] == 1
    assert metrics["kalla_runner_queued_jobs"] == 1

    # Cancel the queued job: the queue frees up and /ready flips back.
    cancelled = runner.request("DELETE", f"/api/jobs/{b['run_id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert runner.request("GET", "/ready").status_code == 200
    assert receiver.wait_for("error", b["run_id"])["code"] == "cancelled"

    # Cancel the running job: its worker process (and so its query) is killed.
    cancelled = runner.request("DELETE", f"/api/jobs/{a['run_id']}")
    assert cancelled.json()["state"] == "cancelled"
    wait_until(lambda: _pid_gone(worker), 10, "the cancelled job's worker to die")
    err = receiver.wait_for("error", a["run_id"])
    assert err["code"] == "cancelled"
    assert runner.request("DELETE", f"/api/jobs/{a['run_id']}").status_code == 409

    # The runner goes on: a new worker takes the next job.
    assert runner.post_job(c).status_code == 202
    receiver.wait_for("complete", c["run_id"])
    # Exactly one final callback per job, whatever the races.
    for job in (a, b, c):
        finals = receiver.received("error", job["run_id"]) + receiver.received(
            "complete", job["run_id"]
        )
        assert len(finals) == 1, finals
    assert not receiver.received("complete", a["run_id"])


def test_concurrency_bound_is_never_exceeded(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner("--max-concurrent-jobs", "2")
    runner.pause_workers(2)
    jobs = [job_body(*sources, receiver.url) for _ in range(5)]
    for job in jobs:
        assert runner.post_job(job).status_code == 202
    wait_until(lambda: runner.metrics()["kalla_runner_active_jobs"] == 2, 10, "2 running jobs")
    states = [runner.status(j["run_id"])["state"] for j in jobs]
    assert sorted(states) == ["queued"] * 3 + ["running"] * 2
    assert runner.metrics()["kalla_runner_queued_jobs"] == 3

    runner.resume_workers()
    for job in jobs:
        receiver.wait_for("complete", job["run_id"])

    # Observed from the evidence: at no instant did more than two runs overlap.
    spans = []
    for job in jobs:
        meta = json.loads((runner.evidence / "runs" / job["run_id"] / "metadata.json").read_text())
        spans.append(
            (
                datetime.fromisoformat(meta["started_at"]),
                datetime.fromisoformat(meta["completed_at"]),
            )
        )
    for start, _ in spans:
        overlapping = sum(1 for s, e in spans if s <= start < e)
        assert overlapping <= 2


def test_worker_crash_fails_the_job_not_the_service(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner()
    (worker,) = runner.pause_workers(1)
    job = job_body(*sources, receiver.url)
    assert runner.post_job(job).status_code == 202
    runner.wait_state(job["run_id"], "running")
    os.kill(worker, 9)  # what the kernel's OOM killer does

    err = receiver.wait_for("error", job["run_id"])
    assert err["code"] == "resources_exhausted"
    assert runner.status(job["run_id"])["state"] == "failed"
    assert runner.request("GET", "/health").status_code == 200

    after = job_body(*sources, receiver.url)
    assert runner.post_job(after).status_code == 202
    receiver.wait_for("complete", after["run_id"])
    assert runner.metrics()["kalla_runner_jobs_failed_total"] == 1


def test_failed_job_sends_one_error_callback(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner()
    job = job_body(*sources, receiver.url)
    job["sources"][0]["uri"] = str(sources[0].with_name("missing.csv"))
    assert runner.post_job(job).status_code == 202
    err = receiver.wait_for("error", job["run_id"])
    assert err["code"] == "source_not_found"
    assert err["stage"] == "staging"
    status = runner.wait_state(job["run_id"], "failed")
    assert status["error"] == err
    # The outbox marks it delivered; no second error callback arrives meanwhile.
    wait_until(
        lambda: runner.metrics()['kalla_runner_callback_attempts_total{kind="error"}'] >= 1,
        5,
        "the error callback attempt",
    )
    assert len(receiver.received("error", job["run_id"], ok_only=False)) == 1
