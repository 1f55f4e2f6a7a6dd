"""A job that got a 202 is never silently lost: receiver outages, kill -9, SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from .conftest import Receiver, Runner, job_body, wait_until


def test_receiver_down_then_up_gets_the_completion(
    start_runner: Callable[..., Runner], sources: tuple[Path, Path]
) -> None:
    runner = start_runner()
    receiver = Receiver()  # its port is chosen but nothing listens yet
    job = job_body(*sources, receiver.url)
    assert runner.post_job(job).status_code == 202
    runner.wait_state(job["run_id"], "completed")
    wait_until(
        lambda: (
            runner.metrics().get('kalla_runner_callback_failures_total{kind="complete"}', 0) >= 2
        ),
        10,
        "failed delivery attempts",
    )
    receiver.start()
    try:
        done = receiver.wait_for("complete", job["run_id"])
        assert done["matched_count"] == 2
    finally:
        receiver.stop()


def test_receiver_5xx_is_retried(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner()
    receiver.status = 503
    job = job_body(*sources, receiver.url)
    assert runner.post_job(job).status_code == 202
    wait_until(lambda: len(receiver.received("complete", ok_only=False)) >= 2, 10, "retries")
    receiver.status = 200
    receiver.wait_for("complete", job["run_id"])


def test_kill_9_mid_job_then_restart_reruns_it(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner()
    runner.pause_workers(1)
    job = job_body(*sources, receiver.url)
    assert runner.post_job(job).status_code == 202
    runner.wait_state(job["run_id"], "running")
    runner.kill9()
    assert not (runner.evidence / "runs" / job["run_id"] / "metadata.json").exists()

    runner.start()  # same state dir
    done = receiver.wait_for("complete", job["run_id"])
    assert done["matched_count"] == 2
    status = runner.wait_state(job["run_id"], "completed")
    assert status["attempts"] == 2
    assert "re-running 1 job(s)" in runner.logs()


def test_undelivered_completion_survives_kill_9(
    start_runner: Callable[..., Runner], sources: tuple[Path, Path]
) -> None:
    runner = start_runner()
    receiver = Receiver()
    job = job_body(*sources, receiver.url)
    assert runner.post_job(job).status_code == 202
    runner.wait_state(job["run_id"], "completed")
    runner.kill9()  # the completion is only in the outbox now

    receiver.start()
    try:
        runner.start()
        assert receiver.wait_for("complete", job["run_id"])["matched_count"] == 2
    finally:
        receiver.stop()


def test_sigterm_drains_running_and_keeps_queued(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner("--shutdown-grace", "20")
    runner.pause_workers(1)
    running, queued = job_body(*sources, receiver.url), job_body(*sources, receiver.url)
    assert runner.post_job(running).status_code == 202
    runner.wait_state(running["run_id"], "running")
    assert runner.post_job(queued).status_code == 202

    runner.signal(signal.SIGTERM)
    wait_until(lambda: "Waiting for application shutdown" in runner.logs(), 10, "shutdown start")
    try:  # no longer accepting
        refused = httpx.post(f"{runner.url}/api/jobs", json=queued, timeout=2).status_code != 202
    except httpx.HTTPError:
        refused = True
    assert refused
    runner.resume_workers()  # the running job may finish within the grace period
    _exited_cleanly(runner)
    assert receiver.wait_for("complete", running["run_id"])
    assert not receiver.received("complete", queued["run_id"])

    runner.start()
    receiver.wait_for("complete", queued["run_id"])
    assert runner.status(running["run_id"])["attempts"] == 1


def test_sigterm_grace_expired_requeues_the_running_job(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner("--shutdown-grace", "0.5")
    runner.pause_workers(1)
    job = job_body(*sources, receiver.url)
    assert runner.post_job(job).status_code == 202
    runner.wait_state(job["run_id"], "running")
    runner.signal(signal.SIGTERM)
    _exited_cleanly(runner)
    assert not receiver.received("error", job["run_id"])  # interrupted, not failed

    runner.start()
    receiver.wait_for("complete", job["run_id"])
    assert runner.status(job["run_id"])["attempts"] == 2


def _exited_cleanly(runner: Runner) -> None:
    # uvicorn re-raises the signal it handled once shutdown is complete, so -SIGTERM is normal.
    assert runner.wait_exit(30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in runner.logs()
