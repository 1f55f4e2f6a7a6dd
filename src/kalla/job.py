"""The job request: what one reconciliation run needs, whoever asks for it.

``JobRequest`` is the seed runner's contract (``POST /api/jobs``); recipes map
onto it (:meth:`kalla.Recipe.to_job_request`) and the engine runs it, so the
CLI, the library and the HTTP runner share one path.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .rules import Rule, check_matching, single_rule
from .schema import ColumnSchema
from .side import Side

__all__ = ["FilterCondition", "FilterOp", "JobRequest", "JobSource", "Side"]


class FilterOp(StrEnum):
    """Filter operators, as the original runner named them."""

    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    BETWEEN = "between"
    IN = "in"
    LIKE = "like"

    @property
    def comparison(self) -> str | None:
        """The SQL operator of a comparison (``eq`` → ``=``, …); ``None`` for between/in/like."""
        return _COMPARISONS.get(self.value)


_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


Scalar = Annotated[int | Decimal | str, Field(union_mode="left_to_right")]


class FilterCondition(BaseModel):
    """``column op value``: applied to a source before matching, by every connector."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(min_length=1)
    op: FilterOp
    value: Scalar | list[Scalar]

    @model_validator(mode="after")
    def _value_fits_op(self) -> Self:
        many = isinstance(self.value, list)
        if self.op is FilterOp.BETWEEN and not (many and len(self.value) == 2):  # type: ignore[arg-type]
            raise ValueError("'between' takes a list of exactly two values [low, high]")
        if self.op is FilterOp.IN and not (many and self.value):
            raise ValueError("'in' takes a non-empty list of values")
        if self.op not in (FilterOp.BETWEEN, FilterOp.IN) and many:
            raise ValueError(f"'{self.op}' takes a single value, not a list")
        if self.op is FilterOp.LIKE and not isinstance(self.value, str):
            raise ValueError("'like' takes a string pattern")
        return self


class JobSource(BaseModel):
    """A source resolved to a URI (the seed's ``ResolvedSource``), plus optional filters and schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    alias: str = Field(min_length=1, description="Table name the match SQL uses for this source.")
    uri: str = Field(
        min_length=1, description="postgres://…?table=T, s3://bucket/key, or a file path."
    )
    filters: list[FilterCondition] = Field(default_factory=list)
    schema_: ColumnSchema | None = Field(
        default=None, alias="schema", description="Columns the source must have, optionally typed."
    )

    @field_validator("alias")
    @classmethod
    def _alias_is_identifier(cls, v: str) -> str:
        if not v.replace("_", "a").isalnum() or v[0].isdigit():
            raise ValueError(
                "alias must be letters, digits and underscores, not starting with a digit"
            )
        return v

    def __repr__(self) -> str:
        from .connectors import redact_uri

        return f"JobSource(alias={self.alias!r}, uri={redact_uri(self.uri)!r})"

    __str__ = __repr__


class JobRequest(BaseModel):
    """One reconciliation run. ``sources[0]`` is the left side, ``sources[1]`` the right."""

    model_config = ConfigDict(extra="forbid")

    run_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    callback_url: str | None = Field(
        default=None, description="Base URL for progress/complete/error callbacks (runner only)."
    )
    match_sql: str | None = Field(
        default=None, min_length=1, description="One read-only query producing matched pairs."
    )
    rules: list[Rule] | None = Field(
        default=None,
        min_length=1,
        description="Ordered matching rules (a waterfall), instead of match_sql.",
    )
    sources: list[JobSource] = Field(min_length=2, max_length=2)
    output_path: str = Field(
        default="", description="Where evidence goes (relative to the evidence root)."
    )
    primary_keys: dict[str, list[str]] = Field(description="Source alias → primary key columns.")
    explain_unmatched: bool = Field(
        default=True,
        description="Add _reason, _rules_attempted and _closest_candidate to unmatched records.",
    )
    recipe_id: str | None = Field(
        default=None, description="The recipe this job came from, if any."
    )

    @model_validator(mode="after")
    def _one_matching_model(self) -> Self:
        check_matching(self.match_sql, self.rules)
        return self

    def effective_rules(self) -> list[Rule]:
        """The rules to run: ``rules``, or the one rule ``match_sql`` stands for."""
        if self.rules is not None:
            return list(self.rules)
        assert self.match_sql is not None
        return [single_rule(self.match_sql)]

    @model_validator(mode="after")
    def _keys_for_each_source(self) -> Self:
        aliases = [s.alias for s in self.sources]
        if aliases[0] == aliases[1]:
            raise ValueError(f"both sources have the alias {aliases[0]!r}; aliases must differ")
        problems = []
        for alias in aliases:
            cols = self.primary_keys.get(alias)
            if not cols or any(not c.strip() for c in cols):
                problems.append(f"primary_keys[{alias!r}] must list at least one column")
        extra = set(self.primary_keys) - set(aliases)
        if extra:
            problems.append(f"primary_keys names unknown aliases: {sorted(extra)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def source(self, side: Side) -> JobSource:
        return self.sources[0 if side is Side.LEFT else 1]

    def keys(self, side: Side) -> list[str]:
        return self.primary_keys[self.source(side).alias]

    def redacted(self) -> dict[str, Any]:
        """The request as JSON with credentials removed from every URI."""
        from .connectors import redact_uri

        data = self.model_dump(mode="json", by_alias=True)
        for s in data["sources"]:
            s["uri"] = redact_uri(s["uri"])
        return data
