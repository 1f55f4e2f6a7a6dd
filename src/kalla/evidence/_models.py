"""Typed evidence metadata and run results: what ``metadata.json`` and callers see."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "OutputPaths",
    "RunMetadata",
    "RunResult",
    "RunStatus",
    "SideCounts",
    "SourceDescription",
]

MATCHED = "matched.parquet"
SUGGESTED = "suggested.parquet"
UNMATCHED = {"left": "unmatched_left.parquet", "right": "unmatched_right.parquet"}
METADATA = "metadata.json"


class RunStatus(StrEnum):
    """How a published run ended: ``completed`` (all datasets) or ``failed`` (metadata only)."""

    COMPLETED = "completed"
    FAILED = "failed"


class OutputPaths(BaseModel):
    """Where a run's three datasets are (each a Parquet file, or a folder of Parquet part
    files with one schema)."""

    matched: str
    unmatched_left: str
    unmatched_right: str
    suggested: str | None = Field(None, description="Pairs of suggest-mode rules, if any.")


class SideCounts(BaseModel):
    """Record counts of one side."""

    records: int = Field(description="Records read (after filters).")
    matched_records: int = Field(description="Records that appear in at least one matched pair.")
    unmatched_records: int
    null_key_records: int = Field(
        0, description="Records with a NULL in the primary key: never matched."
    )


class SourceDescription(BaseModel):
    """A source as the evidence records it: credentials are always redacted."""

    alias: str
    uri: str
    primary_key: list[str]
    filters: list[dict[str, Any]] = Field(default_factory=list)
    columns: dict[str, str] = Field(default_factory=dict, description="Column → Arrow type.")


class RuleCounts(BaseModel):
    """What one rule of the waterfall did."""

    name: str
    kind: str
    mode: str
    pairs: int = Field(description="Distinct (left, right) pairs the rule produced.")
    left_records: int
    right_records: int


class RunMetadata(BaseModel):
    """``metadata.json`` of a run."""

    run_id: uuid.UUID
    recipe_id: str | None = None
    status: RunStatus
    started_at: datetime
    completed_at: datetime
    durations_s: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")
    match_sql: str
    sources: dict[str, SourceDescription] = Field(description="'left' and 'right'.")
    counts: dict[str, SideCounts] = Field(default_factory=dict, description="'left' and 'right'.")
    rules: list[RuleCounts] = Field(default_factory=list, description="Per rule, in order.")
    matched_count: int | None = Field(None, description="Distinct (left, right) pairs matched.")
    matched_rows: int | None = Field(None, description="Rows in matched.parquet.")
    unmatched_left_count: int | None = None
    unmatched_right_count: int | None = None
    error: dict[str, Any] | None = None
    engine: str = "local"
    kalla_version: str


class RunResult(BaseModel):
    """What a finished run returns; ``to_completion()`` is the seed's completion payload."""

    run_id: uuid.UUID
    matched_count: int
    unmatched_left_count: int
    unmatched_right_count: int
    output_paths: OutputPaths
    run_dir: str
    metadata: RunMetadata

    def to_completion(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "matched_count": self.matched_count,
            "unmatched_left_count": self.unmatched_left_count,
            "unmatched_right_count": self.unmatched_right_count,
            "output_paths": self.output_paths.model_dump(exclude_none=True),
        }
