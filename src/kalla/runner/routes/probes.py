"""Probes for orchestrators: liveness, readiness (seed B4) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from .._metrics import CONTENT_TYPE_LATEST
from .._models import ReadyStatus
from ..deps import RunnerDep

__all__ = ["router"]

router = APIRouter(tags=["probes"])


@router.get("/health")
async def health() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=ReadyStatus,
    responses={503: {"model": ReadyStatus, "description": "A new job would be refused now."}},
)
async def ready(runner: RunnerDep) -> JSONResponse:
    """200 only when a new job would be accepted: queue not full, store writable, not stopping."""
    status = runner.readiness()
    return JSONResponse(status.model_dump(), status_code=200 if status.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
async def metrics(runner: RunnerDep) -> Response:
    """Prometheus metrics (``kalla_runner_*``)."""
    return Response(runner.metrics.render(), media_type=CONTENT_TYPE_LATEST)
