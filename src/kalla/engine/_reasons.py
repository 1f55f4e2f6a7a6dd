"""Why each unmatched record is unmatched, and what came closest.

Derived from the rules themselves, in this order of precedence:

``null_key``             the record's primary key has a NULL; it was never offered to a rule
``suggested``            a suggest-mode rule proposed a pair for it (awaiting a person)
``ambiguous``            several candidates tied for its best rank (``ambiguous: leave_unmatched``)
``used_by_other_match``  it had candidates, but an exclusive rule gave them to better pairs
``amount_outside_tolerance`` / ``date_outside_window`` / ``condition_failed``
                         a near miss: a record of the other side met the rule's equality
                         conditions but failed this predicate (tolerance_match /
                         pct_tolerance_match, date_within, anything else)
``no_candidate``         nothing on the other side even met the equality conditions

``_closest_candidate`` names the rule, the other side's key, the failing predicate and by
how much it failed (the amount or the number of days off).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..connectors import TableSource
from ..rules import AggregateRule, Rule
from ..side import Side
from ..sql import SideTable, plan_near_miss, quote
from ._rules import RuleOutput
from ._session import Engine

__all__ = ["CLOSEST", "reasons_table"]

CLOSEST = "_closest_candidate"
_DIFF = pa.decimal128(38, 10)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fields(struct: str, keys: list[str]) -> str:
    return ", ".join(f"get_field({struct}, {_lit(k)})" for k in keys)


def _empty(path: Path, engine: Engine, side: Side, sides: dict[Side, SideTable]) -> pa.Schema:
    def key_type(s: Side) -> pa.DataType:
        return pa.struct([pa.field(k, sides[s].columns[k]) for k in sides[s].keys])

    schema = pa.schema([
        ("key", key_type(side)), ("prio", pa.int64()), ("ri", pa.int64()), ("rule", pa.string()),
        ("other_key", key_type(side.other)), ("predicate", pa.string()), ("difference", _DIFF),
        ("reason", pa.string()),
    ])  # fmt: skip
    pq.write_table(schema.empty_table(), path)
    return schema


def reasons_table(
    engine: Engine,
    side: Side,
    *,
    rules: list[Rule],
    outputs: list[RuleOutput],
    sides: dict[Side, SideTable],
    suggested: Path | None,
    scratch: Path,
    point_views: Callable[[Side], None],
) -> str:
    """Register and return a table: this side's key fields ``k0…``, ``_reason``, ``_closest_candidate``."""
    other = side.other
    tag = f"__kalla_reasons_{side.value}"
    base = scratch / f"reasons_{side.value}_empty.parquet"
    _empty(base, engine, side, sides)
    engine.register_source(
        f"{tag}_empty", TableSource(paths=[str(base)], format="parquet", description="reasons")
    )
    parts = [f"SELECT * FROM {tag}_empty"]
    null_text, null_diff = "arrow_cast(NULL, 'Utf8')", "arrow_cast(NULL, 'Decimal128(38, 10)')"
    if suggested is not None:
        parts.append(
            f"SELECT {side.value}_key AS key, 1 AS prio, 0 AS ri, rule, {other.value}_key AS other_key, "
            f"{null_text} AS predicate, {null_diff} AS difference, 'suggested' AS reason "
            f"FROM {quote('__kalla_suggested')}"
        )
        if side is Side.LEFT:
            engine.register_source(
                "__kalla_suggested",
                TableSource(paths=[str(suggested)], format="parquet", description="s"),
            )
    point_views(side)
    for i, (rule, output) in enumerate(zip(rules, outputs, strict=True)):
        if isinstance(rule, AggregateRule):
            continue
        if output.candidates is not None:
            cand = f"{tag}_cand_{i}"
            engine.register_source(
                cand, TableSource(paths=[str(output.candidates)], format="parquet", description="c")
            )
            amb = output.ambiguous.get(side)
            if amb is not None:
                amb_name = f"{tag}_amb_{i}"
                engine.register_source(
                    amb_name, TableSource(paths=[str(amb)], format="parquet", description="a")
                )
                prio = f"CASE WHEN a.{side.value}_key IS NOT NULL THEN 2 ELSE 3 END"
                reason = f"CASE WHEN a.{side.value}_key IS NOT NULL THEN 'ambiguous' ELSE 'used_by_other_match' END"
                join = f"LEFT JOIN {amb_name} a ON c.{side.value}_key = a.{side.value}_key"
            else:
                prio, reason, join = "3", "'used_by_other_match'", ""
            parts.append(
                f"SELECT c.{side.value}_key AS key, {prio} AS prio, {i} AS ri, c.rule, c.{other.value}_key AS other_key, "
                f"{null_text} AS predicate, {null_diff} AS difference, {reason} AS reason FROM {cand} c {join}"
            )
        plan = plan_near_miss(rule.match_sql, sides)
        if plan is None:
            continue
        n = len(plan.predicates)
        failed = [f"NOT coalesce(__kalla_p{j}, false)" for j in range(n)]
        nf = " + ".join(f"CASE WHEN {f} THEN 1 ELSE 0 END" for f in failed)

        def first(values: list[str], failed: list[str] = failed) -> str:
            """The value belonging to the first predicate that failed."""
            return (
                "CASE "
                + " ".join(f"WHEN {f} THEN {v}" for f, v in zip(failed, values, strict=True))
                + " END"
            )

        near = f"{tag}_near_{i}"
        engine.register_view(
            near,
            f"SELECT {side.value}_key AS key, 4 AS prio, {i} AS ri, {_lit(rule.name)} AS rule, "
            f"{other.value}_key AS other_key, {first([_lit(t) for _, t in plan.predicates])} AS predicate, "
            f"{first([f'__kalla_d{j}' for j in range(n)])} AS difference, "
            f"{first([_lit(r) for r, _ in plan.predicates])} AS reason, {nf} AS __kalla_nf "
            f"FROM ({plan.sql}) WHERE {' OR '.join(failed)}",
        )
        parts.append(
            f"SELECT key, prio + __kalla_nf - 1 AS prio, ri, rule, other_key, predicate, difference, reason FROM {near}"
        )
    union = " UNION ALL ".join(parts)
    order = f"prio, ri, difference ASC NULLS LAST, {_fields('other_key', sides[other].keys)}"
    keys = ", ".join(
        f"get_field(key, {_lit(k)}) AS {quote(f'k{j}')}" for j, k in enumerate(sides[side].keys)
    )
    engine.replace_view(
        tag,
        f"SELECT {keys}, reason AS _reason, named_struct('rule', rule, 'key', other_key, "
        f"'predicate', predicate, 'difference', difference) AS {CLOSEST} FROM ("
        f"SELECT *, row_number() OVER (PARTITION BY key ORDER BY {order}) AS __kalla_rn FROM ({union})"
        f") WHERE __kalla_rn = 1",
    )
    return tag
