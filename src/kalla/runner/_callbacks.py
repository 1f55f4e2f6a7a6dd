"""Callback delivery (seed B1, B2): best-effort progress, at-least-once completion and error.

Progress callbacks are posted once, in the background, and dropped when the
receiver is slow or down: they never hold a job up. Complete and error callbacks
are written to the store's outbox together with the job's outcome; a delivery loop
posts each one, retrying transport errors, 5xx, 408 and 429 with exponential
backoff and jitter (stamina), and after a failed round waits
``callback_redelivery_s`` and starts another. The outbox is on disk, so a restarted
runner resumes delivery. Receivers de-duplicate by ``run_id``.

Callback URLs never carry credentials (admission refuses them), so URLs may be logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

import httpx
import stamina
from pydantic import BaseModel

from ..config import Settings
from ._metrics import RunnerMetrics
from ._models import CallbackKind
from ._store import JobStore, OutboxItem

__all__ = ["CallbackSender", "callback_target"]

log = logging.getLogger("kalla.runner.callbacks")

_MAX_PROGRESS_IN_FLIGHT = 64
_MAX_DELIVERIES_IN_FLIGHT = 32
_HEADERS = {"content-type": "application/json", "user-agent": "kalla-runner"}


class _RetryableStatus(Exception):
    """The receiver answered 5xx, 408 or 429: it may take the callback later."""

    def __init__(self, status: int) -> None:
        super().__init__(f"receiver answered HTTP {status}")


class _Refused(Exception):
    """The receiver answered another 4xx: sending the same callback again will not help."""

    def __init__(self, status: int) -> None:
        super().__init__(f"receiver refused the callback with HTTP {status}")


def callback_target(base_url: str, kind: CallbackKind) -> str:
    """``<callback_url>/<kind>``, as the seed's API layer expects."""
    return f"{base_url.rstrip('/')}/{kind.value}"


class CallbackSender:
    """Posts callbacks with one pooled httpx client with connect/read/pool timeouts."""

    def __init__(self, store: JobStore, settings: Settings, metrics: RunnerMetrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.callback_connect_timeout_s,
                read=settings.callback_read_timeout_s,
                write=settings.callback_read_timeout_s,
                pool=settings.callback_pool_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=_MAX_DELIVERIES_IN_FLIGHT + _MAX_PROGRESS_IN_FLIGHT
            ),
            follow_redirects=False,  # a redirect could point anywhere (SSRF)
            trust_env=False,  # proxies from the environment must not see callbacks
        )
        self._progress: set[asyncio.Task[None]] = set()
        self._deliveries: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    # --- progress: best effort -----------------------------------------------------------------

    def send_progress(self, base_url: str, payload: BaseModel) -> None:
        """Post a progress callback in the background; drop it if too many are in flight."""
        if len(self._progress) >= _MAX_PROGRESS_IN_FLIGHT:
            return
        task = asyncio.create_task(self._post_progress(base_url, payload.model_dump_json()))
        self._progress.add(task)
        task.add_done_callback(self._progress.discard)

    async def _post_progress(self, base_url: str, body: str) -> None:
        kind = CallbackKind.PROGRESS.value
        self._metrics.callback_attempts.labels(kind).inc()
        try:
            response = await self._client.post(
                callback_target(base_url, CallbackKind.PROGRESS), content=body, headers=_HEADERS
            )
            if response.is_success:
                return
        except httpx.HTTPError:
            pass
        self._metrics.callback_failures.labels(kind).inc()

    # --- complete and error: at least once, from the outbox -------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._deliver_due())

    def wake(self) -> None:
        """New outbox entries exist: look now rather than at the next scheduled time."""
        self._wake.set()

    def pending(self) -> int:
        return len(self._deliveries)

    async def _deliver_due(self) -> None:
        while True:
            now = time.time()
            free = _MAX_DELIVERIES_IN_FLIGHT - len(self._deliveries)
            if free > 0:
                for item in self._store.due_callbacks(now, set(self._deliveries), limit=free):
                    task = asyncio.create_task(self._deliver(item))
                    self._deliveries[item.id] = task
                    task.add_done_callback(functools.partial(self._on_delivered, item.id))
            # Anything due now is in flight (its end wakes us) or waits for a free slot (same).
            due = self._store.next_callback_due()
            idle = due is None or due <= now
            timeout = self._settings.callback_redelivery_s if idle else due - now  # type: ignore[operator]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()

    def _on_delivered(self, item_id: int, _task: asyncio.Task[None]) -> None:
        self._deliveries.pop(item_id, None)
        self._wake.set()

    async def _deliver(self, item: OutboxItem) -> None:
        s = self._settings
        url = callback_target(item.url, item.kind)
        attempts = 0
        try:
            async for attempt in stamina.retry_context(
                on=(httpx.TransportError, _RetryableStatus),
                attempts=s.callback_attempts,
                timeout=None,
                wait_initial=s.callback_backoff_initial_s,
                wait_max=s.callback_backoff_max_s,
                wait_jitter=s.callback_backoff_initial_s,
            ):
                with attempt:
                    attempts += 1
                    await self._post_final(url, item)
        except _Refused as exc:
            log.error("%s callback of job %s to %s given up: %s", item.kind, item.run_id, url, exc)
            self._store.callback_failed(item.id, attempts, str(exc), retry_at=None)
        except (httpx.TransportError, _RetryableStatus) as exc:
            retry_at = time.time() + s.callback_redelivery_s
            log.warning(
                "%s callback of job %s to %s failed %d times (%s); retrying in %.0f s",
                item.kind,
                item.run_id,
                url,
                attempts,
                _describe(exc),
                s.callback_redelivery_s,
            )
            self._store.callback_failed(item.id, attempts, _describe(exc), retry_at=retry_at)
        else:
            self._store.callback_delivered(item.id, attempts)

    async def _post_final(self, url: str, item: OutboxItem) -> None:
        kind = item.kind.value
        self._metrics.callback_attempts.labels(kind).inc()
        try:
            response = await self._client.post(url, content=item.payload, headers=_HEADERS)
        except httpx.TransportError:
            self._metrics.callback_failures.labels(kind).inc()
            raise
        if response.is_success:
            return
        self._metrics.callback_failures.labels(kind).inc()
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise _RetryableStatus(response.status_code)
        raise _Refused(response.status_code)

    async def drain(self, timeout: float) -> None:
        """Give deliveries in flight (and those due now) up to ``timeout`` seconds to finish."""
        deadline = time.monotonic() + timeout
        self.wake()
        await asyncio.sleep(0)  # let the loop pick up what is due
        while self._deliveries and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(list(self._deliveries.values()), timeout=left)

    async def close(self) -> None:
        """Stop delivering; undelivered callbacks stay in the outbox for the next start."""
        if self._loop:
            self._loop.cancel()
        tasks = [*self._deliveries.values(), *self._progress]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *([self._loop] if self._loop else []), return_exceptions=True)
        await self._client.aclose()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
