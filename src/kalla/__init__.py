"""kalla: financial reconciliation — two sources, a SQL matching rule, exact evidence."""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version
from typing import TYPE_CHECKING as _TYPE_CHECKING

try:
    __version__ = _version("kalla")
except _NotInstalled:  # running from a source tree without installation
    __version__ = "0.0.0"

from ._api import reconcile
from .errors import *  # noqa: F403
from .errors import __all__ as _error_names
from .evidence import EvidenceRun, EvidenceStore, OutputPaths, RunMetadata, RunResult, RunStatus
from .job import FilterCondition, FilterOp, JobRequest, JobSource, Side
from .progress import ProgressEvent, Stage
from .recipe import Recipe, RecipeSource, RecipeSources, SourceType, load_recipe
from .rules import AggregateRule, Ambiguity, Cardinality, MatchRule, Rule, RuleMode

__all__ = [
    "AggregateRule",
    "Engine",
    "EvidenceRun",
    "EvidenceStore",
    "RunStatus",
    "preview_source",
    "Ambiguity",
    "Cardinality",
    "MatchRule",
    "Rule",
    "RuleMode",
    "FilterCondition",
    "FilterOp",
    "JobRequest",
    "JobSource",
    "OutputPaths",
    "ProgressEvent",
    "Recipe",
    "RecipeSource",
    "RecipeSources",
    "RunMetadata",
    "RunResult",
    "Side",
    "SourceType",
    "Stage",
    "__version__",
    "load_recipe",
    "reconcile",
    *_error_names,
]


# The engine imports DataFusion (about a second of CPU): only when first asked for.
if _TYPE_CHECKING:
    from .engine import Engine, preview_source

_LAZY = {"Engine": "kalla.engine", "preview_source": "kalla.engine"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kalla' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
