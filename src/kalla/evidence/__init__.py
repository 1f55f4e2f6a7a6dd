"""Evidence: one folder per run with matched/unmatched Parquet files and ``metadata.json``."""

from ._evidence import EvidenceRun, EvidenceStore
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
    "EvidenceRun",
    "EvidenceStore",
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
