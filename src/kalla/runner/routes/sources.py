"""``/api/sources``: look at a source before writing a recipe for it (scoped preview).

The preview runs in a thread (the event loop never waits on a database or a file), at
most :data:`PREVIEW_CONCURRENCY` at once; more answer 503 at once. The same admission
rules as jobs apply (allowed roots, connector, token), and every error message is
scrubbed of the URI's secrets before it leaves.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import math
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request

from ...connectors import scrub, secrets_in
from ...errors import ExecutionFailed, KallaError, QueueFull
from .._admission import admit_source
from .._models import (
    PREVIEW_MAX_LIMIT,
    ErrorBody,
    PreviewColumn,
    PreviewRequest,
    SourcePreview,
)
from ..deps import SettingsDep, require_token

__all__ = ["PREVIEW_CONCURRENCY", "router"]

#: Previews running at once per server; each holds a thread and a connection.
PREVIEW_CONCURRENCY = 4

router = APIRouter(prefix="/api/sources", tags=["sources"], dependencies=[Depends(require_token)])


@router.post(
    "/preview",
    responses={
        400: {"model": ErrorBody, "description": "Refused by policy or invalid (typed `code`)."},
        401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
        422: {"model": ErrorBody, "description": "Body does not match the schema."},
        502: {"model": ErrorBody, "description": "The source could not be reached."},
        503: {"model": ErrorBody, "description": "Too many previews running; see Retry-After."},
    },
)
async def preview(body: PreviewRequest, settings: SettingsDep, request: Request) -> SourcePreview:
    """The source's typed columns and its first rows passing ``filters`` (at most ``limit``,
    capped at 1000). Pushed down where the source can (PostgreSQL: ``WHERE … LIMIT``);
    files and S3 are scanned only as far as needed."""
    try:
        admit_source("preview", body.uri, settings)
    except KallaError as err:
        raise _scrubbed(err, secrets_in(body.uri)) from None
    slots = _slots(request)
    if slots.locked():
        raise QueueFull(f"{PREVIEW_CONCURRENCY} previews are running already; retry in a moment")
    async with slots:
        return await asyncio.to_thread(_run_preview, body)


def _scrubbed(err: KallaError, secrets: list[str]) -> KallaError:
    err.message = scrub(err.message, secrets)
    err.args = (err.message,)
    return err


def _slots(request: Request) -> asyncio.Semaphore:
    state = request.app.state
    if getattr(state, "preview_slots", None) is None:
        state.preview_slots = asyncio.Semaphore(PREVIEW_CONCURRENCY)
    slots: asyncio.Semaphore = state.preview_slots
    return slots


def _run_preview(body: PreviewRequest) -> SourcePreview:
    secrets = secrets_in(body.uri)
    try:
        from ...engine import preview_source  # imports DataFusion: once, in a thread

        table = preview_source(
            body.uri, filters=body.filters, limit=min(body.limit, PREVIEW_MAX_LIMIT)
        )
    except KallaError as err:
        raise _scrubbed(err, secrets) from None
    except Exception as exc:  # a bug: still typed, never with the URI's secrets
        raise ExecutionFailed(
            scrub(f"preview failed: {type(exc).__name__}: {exc}", secrets)[:500]
        ) from None
    return SourcePreview(
        columns=[
            PreviewColumn(name=f.name, data_type=str(f.type), nullable=f.nullable)
            for f in table.schema
        ],
        rows=[{k: _json(v) for k, v in row.items()} for row in table.to_pylist()],
        preview_rows=table.num_rows,
    )


def _json(value: Any) -> Any:
    """A value as JSON: exact decimals as text, ISO dates, base64 binary."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return str(value)
