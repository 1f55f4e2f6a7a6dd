"""The FastAPI application, built from a :class:`~kalla.config.Settings` by :func:`create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..errors import RequestTooLarge
from ._errors import error_response, install_error_handlers
from ._metrics import RunnerMetrics
from ._service import JobRunner
from .routes import jobs, probes, sources

__all__ = ["create_app"]


def create_app(settings: Settings) -> FastAPI:
    """A runner app. The job store opens and workers start when the app's lifespan starts."""
    metrics = RunnerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = JobRunner(settings, metrics)
        app.state.runner = runner
        await runner.start()
        try:
            yield
        finally:
            await runner.stop()

    app = FastAPI(
        title="kalla runner",
        version=_version(),
        description="Runs reconciliation jobs and reports them by callback. See docs/RUNNER.md.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app, settings.retry_after_s)
    app.include_router(jobs.router)
    app.include_router(sources.router)
    app.include_router(probes.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app


class BodySizeLimit:
    """Answer 413 to a request body over ``max_bytes`` before anything parses it.

    The body is read here (it is small by definition) so chunked uploads without a
    ``Content-Length`` are bounded too, then replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = RequestTooLarge(f"request body is over {self.max_bytes} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(too_large)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await error_response(too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _version() -> str:
    try:
        return version("kalla")
    except PackageNotFoundError:
        return "0+unknown"
