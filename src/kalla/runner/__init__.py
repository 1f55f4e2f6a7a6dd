"""The HTTP job runner (``kalla serve``): FastAPI app, job store, workers, callbacks, metrics.

Needs the ``serve`` extra (``pip install 'kalla[serve]'``). Names are imported on first
use, so a worker process (``kalla.runner._worker``) never imports the web stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import create_app
    from ._models import (
        CompletionCallback,
        ErrorBody,
        ErrorCallback,
        JobAccepted,
        JobState,
        JobStatus,
        MatchingProgress,
        ProgressCallback,
        ReadyStatus,
        RunnerJobRequest,
        StagingProgress,
        WritingProgress,
    )

__all__ = [
    "CompletionCallback",
    "ErrorBody",
    "ErrorCallback",
    "JobAccepted",
    "JobState",
    "JobStatus",
    "MatchingProgress",
    "ProgressCallback",
    "ReadyStatus",
    "RunnerJobRequest",
    "StagingProgress",
    "WritingProgress",
    "create_app",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        return import_module("._app", __name__).create_app
    if name in __all__:
        return getattr(import_module("._models", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
