"""Planning a distributed match from DataFusion's optimized logical plan of ``match_sql``.

The original rewrote SQL by searching for " FROM "; kalla reads the plan DataFusion itself
made. When the plan is one inner join of the left table with the right table, with only
row-local steps (projections, filters, aliases, sort, distinct) around it, and the join
has equality conditions (``i.invoice_id = p.reference_number``, composite or over
expressions such as ``normalize_ref(i.ref)``), rows are hash-partitioned on those key
expressions: equal keys land in the same bucket, so each bucket can be matched alone
(:attr:`Mode.HASH`). Without an equality the smaller side is broadcast to every task
(:attr:`Mode.BROADCAST`). Any other shape (several joins, aggregates, limits) runs as one
task (:attr:`Mode.SINGLE`), still exact, with the same size limit as a broadcast.

This module reads DataFusion plans, so it imports ``datafusion`` (for ``Expr`` and the
SQL unparser); it runs queries only through :class:`kalla.engine.Engine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pyarrow as pa

from ..engine import Engine
from ..job import Side
from ..sql import quote

__all__ = ["JoinPlan", "Mode", "plan_join"]

#: Plan nodes that keep each output row tied to one (left row, right row) pair.
_ROW_LOCAL_ABOVE = {"Projection", "Filter", "SubqueryAlias", "Sort", "Distinct"}
_ROW_LOCAL_SIDE = {"Projection", "Filter", "SubqueryAlias"}
KEY_PREFIX = "__kalla_k"


class Mode(StrEnum):
    HASH = "hash"
    BROADCAST = "broadcast"
    SINGLE = "single"


@dataclass(frozen=True)
class JoinPlan:
    """How to split one match: the mode and, for HASH, each side's key-computing SQL."""

    mode: Mode
    reason: str
    key_sql: dict[Side, str] = field(default_factory=dict)
    key_count: int = 0
    nulls_match: bool = False


def _name(plan: Any) -> str:
    return type(plan.to_variant()).__name__


def _find_join(plan: Any) -> Any | None:
    """The one join below a chain of row-local nodes, or ``None``."""
    while True:
        kind = _name(plan)
        if kind in ("Join", "CrossJoin"):
            return plan
        inputs = plan.inputs()
        if kind not in _ROW_LOCAL_ABOVE or len(inputs) != 1:
            return None
        plan = inputs[0]


def _side_of(plan: Any, tables: dict[str, Side]) -> tuple[Side, str] | None:
    """Which side a join input reads, and the qualifier its columns carry."""
    qualifier: str | None = None
    while True:
        variant = plan.to_variant()
        kind = type(variant).__name__
        if kind == "TableScan":
            side = tables.get(variant.table_name())
            if side is None:
                return None
            return side, qualifier or variant.table_name()
        inputs = plan.inputs()
        if kind not in _ROW_LOCAL_SIDE or len(inputs) != 1:
            return None
        if kind == "SubqueryAlias" and qualifier is None:
            qualifier = variant.alias()
        plan = inputs[0]


def plan_join(sql: str, aliases: dict[Side, str], schemas: dict[Side, pa.Schema]) -> JoinPlan:
    """Decide how to distribute ``sql`` (already rewritten by :func:`kalla.sql.plan_match`).

    ``aliases`` maps each side to the table name ``sql`` reads, ``schemas`` to its columns.
    Planning happens against empty tables of those schemas, so the key SQL reads the alias
    as a plain table: each map task registers its chunk of rows under that name.
    """
    with Engine(target_partitions=1) as engine:
        for side in Side:
            engine.register_arrow(aliases[side], [], schemas[side])
        return _plan(engine, sql, aliases, {aliases[s]: s for s in Side})


def _plan(engine: Engine, sql: str, aliases: dict[Side, str], tables: dict[str, Side]) -> JoinPlan:
    from datafusion import Expr
    from datafusion.unparser import Dialect, Unparser

    join = _find_join(engine.dataframe(sql).optimized_logical_plan())
    if join is None:
        return JoinPlan(Mode.SINGLE, "match_sql is not one join between the two sides")
    variant = join.to_variant()
    inputs = join.inputs()
    sides = [_side_of(p, tables) for p in inputs]
    if any(s is None for s in sides) or {s[0] for s in sides if s} != set(Side):
        return JoinPlan(Mode.SINGLE, "a join input is not a plain scan of one side")
    if type(variant).__name__ == "Join" and str(variant.join_type()) != "Inner":
        return JoinPlan(Mode.SINGLE, f"{variant.join_type()} join")
    on = list(variant.on()) if type(variant).__name__ == "Join" else []
    if not on:
        return JoinPlan(Mode.BROADCAST, "no equality condition between the sides")
    key_sql: dict[Side, str] = {}
    unparser = Unparser(Dialect.default())
    for position, info in enumerate(sides):
        assert info is not None
        side, qualifier = info
        exprs = [Expr(pair[position]).alias(f"{KEY_PREFIX}{n}") for n, pair in enumerate(on)]
        base = f"SELECT * FROM {quote(aliases[side])} AS {quote(qualifier)}"
        try:
            df = engine.dataframe(base).with_columns(*exprs)
            key_sql[side] = str(unparser.plan_to_sql(df.logical_plan()))
            engine.dataframe(key_sql[side]).schema()  # the SQL must plan again as written
        except Exception as exc:  # a key over a derived column: still exact, as one task
            return JoinPlan(Mode.SINGLE, f"join key not computable from the source: {exc}"[:300])
    return JoinPlan(
        Mode.HASH,
        f"{len(on)} equality condition(s)",
        key_sql=key_sql,
        key_count=len(on),
        nulls_match=bool(variant.null_equals_null()),
    )
