"""The reconciliation engine: DataFusion with financial UDFs. The only package that imports datafusion."""

from ._preview import DEFAULT_PREVIEW_LIMIT, MAX_PREVIEW_LIMIT, preview_source
from ._reconcile import run_job
from ._session import Engine

__all__ = ["DEFAULT_PREVIEW_LIMIT", "MAX_PREVIEW_LIMIT", "Engine", "preview_source", "run_job"]
