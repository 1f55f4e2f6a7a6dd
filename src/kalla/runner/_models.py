"""Every shape the runner sends or receives: requests, answers and callbacks (seed B1).

These models are the contract with the upstream API layer; they appear in
``/openapi.json`` (callbacks as OpenAPI ``callbacks`` of ``POST /api/jobs``).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..evidence import OutputPaths
from ..job import FilterCondition, JobRequest

__all__ = [
    "CallbackKind",
    "CompletionCallback",
    "ErrorBody",
    "ErrorCallback",
    "JobAccepted",
    "JobState",
    "JobStatus",
    "MatchingProgress",
    "PreviewColumn",
    "PreviewRequest",
    "ProgressCallback",
    "ReadyStatus",
    "RunnerJobRequest",
    "SourcePreview",
    "StagingProgress",
    "WritingProgress",
]


class RunnerJobRequest(JobRequest):
    """``POST /api/jobs`` body: the seed's JobRequest, with ``run_id`` and ``callback_url`` required.

    ``output_path`` is relative to the runner's evidence root; empty means ``runs/<run_id>``.
    """

    run_id: uuid.UUID = Field(description="Caller-chosen id; re-posting the same body is a no-op.")
    callback_url: str = Field(  # type: ignore[assignment]
        min_length=1,
        max_length=2048,
        description="Base URL; the runner POSTs to <callback_url>/progress, /complete and /error.",
    )


class JobState(StrEnum):
    """Life of a job: queued → running → completed | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class JobAccepted(BaseModel):
    """Answer to ``POST /api/jobs`` (202 when new, 200 when the same job was already accepted)."""

    run_id: uuid.UUID
    status: Literal["accepted"] = "accepted"


class ErrorBody(BaseModel):
    """Every error answer of the runner (4xx/5xx): a stable ``code`` and a message."""

    code: str = Field(description="Stable machine-readable code, e.g. match_sql_forbidden.")
    error: str = Field(description="What went wrong, for a person. Never contains secrets.")
    stage: str | None = None
    details: Any | None = Field(default=None, description="Field errors (422) or error specifics.")


class StagingProgress(BaseModel):
    """Sent while a source is read: once per source with ``progress`` 0..1 and the source alias."""

    run_id: uuid.UUID
    stage: Literal["staging"] = "staging"
    progress: float = Field(ge=0, le=1)
    source: str | None = Field(default=None, description="Alias of the source being staged.")


class MatchingProgress(BaseModel):
    """Sent once the match query has run: pairs found so far."""

    run_id: uuid.UUID
    stage: Literal["matching"] = "matching"
    progress: float = Field(ge=0, le=1)
    matched_count: int | None = Field(default=None, ge=0)


class WritingProgress(BaseModel):
    """Sent while evidence files are written and published."""

    run_id: uuid.UUID
    stage: Literal["writing_results"] = "writing_results"
    progress: float = Field(ge=0, le=1)


ProgressCallback = Annotated[
    StagingProgress | MatchingProgress | WritingProgress, Field(discriminator="stage")
]


class CallbackOutputPaths(OutputPaths):
    """The run's files; ``suggested`` appears only when the run wrote suggested pairs."""

    suggested: str | None = Field(
        None, exclude_if=lambda v: v is None, description="Pairs of suggest-mode rules, if any."
    )


class CompletionCallback(BaseModel):
    """``POST <callback_url>/complete``: sent at least once per completed job; the files exist."""

    run_id: uuid.UUID
    matched_count: int
    unmatched_left_count: int
    unmatched_right_count: int
    output_paths: CallbackOutputPaths


class ErrorCallback(BaseModel):
    """``POST <callback_url>/error``: sent at least once, for exactly one failure, per failed job."""

    run_id: uuid.UUID
    error: str = Field(description="What went wrong; never contains secrets.")
    code: str = Field(description="Stable error code, e.g. source_not_found or cancelled.")
    stage: str | None = Field(default=None, description="Stage the job was in when it failed.")
    retryable: bool = Field(
        default=False, description="Whether running the same job again could succeed."
    )


class CallbackKind(StrEnum):
    """The path under ``callback_url`` a callback is posted to."""

    PROGRESS = "progress"
    COMPLETE = "complete"
    ERROR = "error"


class JobStatus(BaseModel):
    """``GET /api/jobs/{run_id}``: where a job is, and its outcome once it has one."""

    model_config = ConfigDict(use_enum_values=False)

    run_id: uuid.UUID
    state: JobState
    stage: str | None = Field(default=None, description="Last stage reported by the engine.")
    progress: float | None = Field(default=None, ge=0, le=1)
    attempts: int = Field(0, description="Times the job was started (re-runs after a crash count).")
    created_at: float = Field(description="Unix time the job was accepted.")
    updated_at: float
    result: CompletionCallback | None = Field(
        default=None, description="The completion, once completed."
    )
    error: ErrorCallback | None = Field(
        default=None, description="The failure, once failed or cancelled."
    )


class ReadyStatus(BaseModel):
    """``GET /ready``: 200 when a new job would be accepted, else 503 with the reason."""

    ready: bool
    reason: str | None = Field(
        default=None, description="queue_full, store_unwritable or shutting_down."
    )
    queued: int
    running: int


#: Rows a preview returns unless asked, and the most it returns whatever it is asked.
PREVIEW_DEFAULT_LIMIT = 200
PREVIEW_MAX_LIMIT = 1000


class PreviewRequest(BaseModel):
    """``POST /api/sources/preview`` body: a source, optional filters, how many rows."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=4096, description="A source URI, as in a job.")
    filters: list[FilterCondition] = Field(default_factory=list)
    limit: int = Field(
        PREVIEW_DEFAULT_LIMIT,
        ge=1,
        description=f"Rows wanted; capped at {PREVIEW_MAX_LIMIT}.",
    )


class PreviewColumn(BaseModel):
    """One column of a previewed source, typed as a run reads it."""

    name: str
    data_type: str = Field(description="Arrow type, e.g. decimal128(18, 2), string, date32[day].")
    nullable: bool


class SourcePreview(BaseModel):
    """Answer to a preview: the source's typed columns and its first rows (filters applied).

    Values are JSON: decimals as strings (exact), dates and times in ISO 8601, binary as
    base64.
    """

    columns: list[PreviewColumn]
    rows: list[dict[str, Any]]
    preview_rows: int = Field(description="Number of rows returned.")
