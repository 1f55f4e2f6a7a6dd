"""Prometheus metrics of one runner, in a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "RunnerMetrics"]

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class RunnerMetrics:
    """The runner's gauges, counters and job-duration histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_jobs = Gauge("kalla_runner_active_jobs", "Jobs running now.", registry=r)
        self.queued_jobs = Gauge("kalla_runner_queued_jobs", "Jobs waiting to run.", registry=r)
        self.jobs_completed = Counter(
            "kalla_runner_jobs_completed", "Jobs that completed.", registry=r
        )
        self.jobs_failed = Counter("kalla_runner_jobs_failed", "Jobs that failed.", registry=r)
        self.jobs_cancelled = Counter(
            "kalla_runner_jobs_cancelled", "Jobs cancelled by DELETE.", registry=r
        )
        self.jobs_rejected = Counter(
            "kalla_runner_jobs_rejected",
            "POST /api/jobs answered 503 (queue full or shutting down).",
            ["reason"],
            registry=r,
        )
        self.job_duration = Histogram(
            "kalla_runner_job_duration_seconds",
            "Wall time of a job's run, from start to outcome.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.callback_attempts = Counter(
            "kalla_runner_callback_attempts",
            "HTTP requests made to deliver callbacks.",
            ["kind"],
            registry=r,
        )
        self.callback_failures = Counter(
            "kalla_runner_callback_failures",
            "Callback requests that failed (transport error or non-2xx answer).",
            ["kind"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
