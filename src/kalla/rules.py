"""Matching rules beyond one SQL statement: ordered passes, exclusivity, sums, suggestions.

A recipe (or job) gives either ``match_sql`` — one rule named ``match_sql`` that keeps every
pair it yields — or ``rules``, an ordered list. Rules run as a **waterfall**: rule k only sees
records no earlier ``auto`` rule matched.

* ``kind: match`` (the default): a ``match_sql`` over the same aliases, with a ``cardinality``.
  ``many_to_many`` keeps every pair; ``one_to_one`` uses each record at most once,
  ``one_to_many`` each right record at most once, ``many_to_one`` each left record at most once.
  Pairs are chosen best-first by ``rank_by`` (ascending SQL expressions over the query's tables),
  ties broken by the keys, so reruns give identical results. ``ambiguous: leave_unmatched``
  leaves a record whose best rank is shared by several candidates unmatched (reason
  ``ambiguous``) instead of breaking the tie by key.
* ``kind: aggregate``: records of the ``many`` side grouped by ``group_by`` match one record of
  the other side whose ``one_key`` equals the group and whose ``one_amount`` equals the sum of
  ``many_amount`` within ``tolerance`` (decimal-exact). Every member of a matched group shares
  a ``match_group`` id.
* ``mode: suggest`` sends a rule's pairs to ``suggested.parquet`` for a person to confirm; its
  records stay unmatched (and available to later rules).
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from .side import Side

__all__ = [
    "AggregateRule",
    "Ambiguity",
    "Cardinality",
    "MatchRule",
    "Rule",
    "RuleMode",
    "check_matching",
    "single_rule",
]


class Cardinality(StrEnum):
    MANY_TO_MANY = "many_to_many"
    ONE_TO_ONE = "one_to_one"
    ONE_TO_MANY = "one_to_many"
    MANY_TO_ONE = "many_to_one"

    def exclusive(self) -> set[Side]:
        """The sides whose records may appear in at most one pair of this rule."""
        return {
            Cardinality.MANY_TO_MANY: set(),
            Cardinality.ONE_TO_ONE: {Side.LEFT, Side.RIGHT},
            Cardinality.ONE_TO_MANY: {Side.RIGHT},
            Cardinality.MANY_TO_ONE: {Side.LEFT},
        }[self]


class RuleMode(StrEnum):
    AUTO = "auto"
    SUGGEST = "suggest"


class Ambiguity(StrEnum):
    BEST = "best"
    LEAVE_UNMATCHED = "leave_unmatched"


def _read_only(sql: str) -> str:
    from .errors import KallaError
    from .sql import check_read_only

    try:
        check_read_only(sql)
    except KallaError as err:
        raise ValueError(f"{err.message} [{err.code}]") from None
    return sql


def _expression(text: str) -> str:
    from .errors import KallaError
    from .sql import check_expression

    try:
        check_expression(text)
    except KallaError as err:
        raise ValueError(err.message) from None
    return text


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\- ]+$")
    mode: RuleMode = RuleMode.AUTO


class MatchRule(_RuleBase):
    """Pairs from a SQL query, kept all or chosen exclusively best-first."""

    kind: Literal["match"] = "match"
    match_sql: str = Field(min_length=1)
    cardinality: Cardinality = Cardinality.MANY_TO_MANY
    rank_by: list[str] = Field(default_factory=list, description="Ascending; best first.")
    ambiguous: Ambiguity = Ambiguity.BEST

    _check_sql = field_validator("match_sql")(classmethod(lambda cls, v: _read_only(v)))

    @field_validator("rank_by")
    @classmethod
    def _ranks(cls, v: list[str]) -> list[str]:
        return [_expression(e) for e in v]


class AggregateRule(_RuleBase):
    """A group of ``many``-side records whose amounts sum to one record of the other side."""

    kind: Literal["aggregate"]
    many: Side = Field(description="The side whose records are grouped and summed.")
    group_by: str = Field(
        description="Expression over the many side's columns, e.g. reference_number."
    )
    many_amount: str = Field(description="Expression summed over each group, e.g. paid_amount.")
    one_key: str = Field(
        description="Expression over the other side equal to the group, e.g. invoice_id."
    )
    one_amount: str = Field(description="Expression compared with the group's sum, e.g. amount.")
    tolerance: Decimal = Field(default=Decimal(0), ge=0)

    @field_validator("group_by", "many_amount", "one_key", "one_amount")
    @classmethod
    def _expr(cls, v: str) -> str:
        return _expression(v)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "match"))
    return str(getattr(value, "kind", "match"))


Rule = Annotated[
    Annotated[MatchRule, Tag("match")] | Annotated[AggregateRule, Tag("aggregate")],
    Discriminator(_kind),
]


def check_matching(match_sql: str | None, rules: list[Any] | None) -> None:
    """Exactly one of ``match_sql`` and ``rules``, and rule names unique (recipes and jobs)."""
    if (match_sql is None) == (rules is None):
        raise ValueError("give either match_sql or rules, not both and not neither")
    if rules is not None:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {dupes}")


def single_rule(match_sql: str) -> MatchRule:
    """The rule a plain ``match_sql`` stands for."""
    # Not re-validated here: the engine's own SQL check reports a bad query as a typed error.
    return MatchRule.model_construct(name="match_sql", match_sql=match_sql)
