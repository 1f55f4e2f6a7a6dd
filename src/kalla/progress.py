"""Progress of a run, as the engine reports it (the runner turns these into callbacks)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

__all__ = ["ProgressEvent", "Stage"]


class Stage(StrEnum):
    """The stages of a run, in order."""

    STAGING = "staging"
    MATCHING = "matching"
    WRITING_RESULTS = "writing_results"
    PUBLISHING = "publishing"


class ProgressEvent(BaseModel):
    """One step forward. ``source`` is set while staging, ``matched_count`` once matching is done."""

    stage: Stage
    progress: float = Field(ge=0.0, le=1.0)
    source: str | None = None
    matched_count: int | None = None
