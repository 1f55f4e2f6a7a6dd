"""``/api/jobs``: submit, inspect and cancel reconciliation jobs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response

from .._models import (
    CompletionCallback,
    ErrorBody,
    ErrorCallback,
    JobAccepted,
    JobStatus,
    ProgressCallback,
    RunnerJobRequest,
)
from ..deps import RunnerDep, require_token

__all__ = ["router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Refused by policy (typed `code`)."},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
    413: {"model": ErrorBody, "description": "Body over the size limit."},
    422: {"model": ErrorBody, "description": "Body does not match the schema (field errors)."},
}

# Documentation only: the requests the runner makes to the caller's callback_url.
callbacks = APIRouter()


@callbacks.post("{$request.body#/callback_url}/progress", summary="Progress (best effort)")
def progress_callback(body: Annotated[ProgressCallback, Body()]) -> None:
    """Stage ``staging`` (per source), ``matching`` (with matched_count), ``writing_results``."""


@callbacks.post("{$request.body#/callback_url}/complete", summary="Completion (at least once)")
def complete_callback(body: CompletionCallback) -> None:
    """The job completed; ``output_paths`` exist. De-duplicate by ``run_id``."""


@callbacks.post("{$request.body#/callback_url}/error", summary="Error (at least once)")
def error_callback(body: ErrorCallback) -> None:
    """The job failed or was cancelled (code ``cancelled``). De-duplicate by ``run_id``."""


router = APIRouter(prefix="/api", tags=["jobs"], dependencies=[Depends(require_token)])


@router.post(
    "/jobs",
    status_code=202,
    responses={
        200: {"model": JobAccepted, "description": "This job was already accepted (same body)."},
        **_ERRORS,
        409: {"model": ErrorBody, "description": "run_id already used with a different body."},
        503: {"model": ErrorBody, "description": "Queue full or shutting down; see Retry-After."},
    },
    callbacks=callbacks.routes,
)
async def submit_job(job: RunnerJobRequest, runner: RunnerDep, response: Response) -> JobAccepted:
    """Queue a job. It is on disk before this answers 202; re-posting the same body answers 200."""
    accepted, created = runner.submit(job)
    if not created:
        response.status_code = 200
    return accepted


@router.get(
    "/jobs/{run_id}",
    responses={
        401: _ERRORS[401],
        404: {"model": ErrorBody, "description": "Unknown run_id."},
        422: _ERRORS[422],
    },
)
async def get_job(run_id: uuid.UUID, runner: RunnerDep) -> JobStatus:
    """State, stage and progress of a job, with its completion or error once it has one."""
    return runner.status(str(run_id))


@router.delete(
    "/jobs/{run_id}",
    responses={
        401: _ERRORS[401],
        404: {"model": ErrorBody, "description": "Unknown run_id."},
        409: {"model": ErrorBody, "description": "The job already finished."},
        422: _ERRORS[422],
    },
)
async def cancel_job(run_id: uuid.UUID, runner: RunnerDep) -> JobStatus:
    """Cancel a queued or running job (its worker is killed) and send its error callback."""
    return runner.cancel(str(run_id))
