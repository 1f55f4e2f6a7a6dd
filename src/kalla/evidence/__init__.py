"""Evidence: one folder per run with matched/unmatched Parquet files and ``metadata.json``."""

from ._models import (
    OutputPaths,
    RuleCounts,
    RunMetadata,
    RunResult,
    RunStatus,
    SideCounts,
    SourceDescription,
)
from ._store import RunWriter, read_metadata

__all__ = [
    "OutputPaths",
    "RuleCounts",
    "RunMetadata",
    "RunResult",
    "RunStatus",
    "RunWriter",
    "SideCounts",
    "SourceDescription",
    "read_metadata",
]
