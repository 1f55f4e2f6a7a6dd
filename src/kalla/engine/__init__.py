"""The reconciliation engine: DataFusion with financial UDFs. The only package that imports datafusion."""

from ._reconcile import run_job
from ._session import Engine

__all__ = ["Engine", "run_job"]
