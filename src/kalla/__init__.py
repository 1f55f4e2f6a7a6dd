"""kalla: financial reconciliation — two sources, a SQL matching rule, exact evidence."""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

try:
    __version__ = _version("kalla")
except _NotInstalled:  # running from a source tree without installation
    __version__ = "0.0.0"

from ._api import reconcile
from .errors import *  # noqa: F403
from .errors import __all__ as _error_names
from .evidence import OutputPaths, RunMetadata, RunResult
from .job import FilterCondition, FilterOp, JobRequest, JobSource, Side
from .progress import ProgressEvent, Stage
from .recipe import Recipe, RecipeSource, RecipeSources, SourceType, load_recipe
from .rules import AggregateRule, Ambiguity, Cardinality, MatchRule, Rule, RuleMode

__all__ = [
    "AggregateRule",
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
