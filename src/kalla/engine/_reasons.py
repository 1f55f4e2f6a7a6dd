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
    engine.register_file(f"{tag}_empty", base)
    parts = [f"SELECT * FROM {tag}_empty"]
    null_text, null_diff = "arrow_cast(NULL, 'Utf8')", "arrow_cast(NULL, 'Decimal128(38, 10)')"
    if suggested is not None:
        parts.append(
            f"SELECT {side.value}_key AS key, 1 AS prio, 0 AS ri, rule, {other.value}_key AS other_key, "
            f"{null_text} AS predicate, {null_diff} AS difference, 'suggested' AS reason "
            f"FROM {quote('__kalla_suggested')}"
        )
        if side is Side.LEFT:
            engine.register_file("__kalla_suggested", suggested)
    point_views(side)
    for i, (rule, output) in enumerate(zip(rules, outputs, strict=True)):
        if isinstance(rule, AggregateRule):
            continue
        if output.candidates is not None:
            cand = f"{tag}_cand_{i}"
            engine.register_file(cand, output.candidates)
            amb = output.ambiguous.get(side)
            if amb is not None:
                amb_name = f"{tag}_amb_{i}"
                engine.register_file(amb_name, amb)
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
    keys = ", ".join(
        f"get_field(key, {_lit(k)}) AS {quote(f'k{j}')}" for j, k in enumerate(sides[side].keys)
    )
    kcols = ", ".join(quote(f"k{j}") for j in range(len(sides[side].keys)))
    # Each record's first row in (prio, ri, difference, other key) order. Most records have
    # one row (one near miss, or one reason); only those with several need ranking. Window
    # functions and DISTINCT ON cost a per-record overhead in DataFusion (one tiny partition
    # each), ordered first_value ~10x more; so: the rows, written once; the few keys with
    # several rows, written once; one row per key for the rest as they are, and for those
    # keys the minimum of one sortable text per row, joined back. The closest candidate stays
    # flat (c_*) through the join with the unmatched records and becomes a struct after it.
    rank = " || ".join(
        [
            "lpad(CAST(prio AS VARCHAR), 6, '0')",
            "lpad(CAST(ri AS VARCHAR), 6, '0')",
            "coalesce(lpad(CAST(difference AS VARCHAR), 48, '0'), '~')",
            *(
                f"'|' || coalesce(CAST(get_field(other_key, {_lit(k)}) AS VARCHAR), '')"
                for k in sides[other].keys
            ),
        ]
    )
    rows_path = scratch / f"reasons_{side.value}.parquet"
    engine.write_parquet(engine.dataframe(f"SELECT {keys}, * FROM ({union})"), rows_path)
    rows = f"{tag}_rows"
    engine.register_file(rows, rows_path)
    several_path = scratch / f"reasons_{side.value}_several.parquet"
    engine.write_parquet(
        engine.dataframe(f"SELECT {kcols} FROM {rows} GROUP BY {kcols} HAVING count(*) > 1"),
        several_path,
    )
    several = f"{tag}_several"
    engine.register_file(several, several_path)

    def on(other: str) -> str:
        return " AND ".join(
            f"u.{quote(f'k{j}')} = {other}.{quote(f'k{j}')}" for j in range(len(sides[side].keys))
        )

    ucols = ", ".join(f"u.{quote(f'k{j}')}" for j in range(len(sides[side].keys)))
    picked = (
        "u.reason AS _reason, u.rule AS c_rule, u.other_key AS c_key, "
        "u.predicate AS c_predicate, u.difference AS c_difference"
    )
    # Written once: the query below reads the ranked rows twice.
    ranked_path = scratch / f"reasons_{side.value}_ranked.parquet"
    engine.write_parquet(
        engine.dataframe(
            f"SELECT u.*, {rank} AS __kalla_rank FROM {rows} u LEFT SEMI JOIN {several} m ON {on('m')}"
        ),
        ranked_path,
    )
    ranked = f"{tag}_ranked"
    engine.register_file(ranked, ranked_path)
    query = (
        f"SELECT {ucols}, {picked} FROM {rows} u LEFT ANTI JOIN {several} m ON {on('m')} "
        f"UNION ALL "
        f"SELECT {ucols}, {picked} FROM {ranked} u "
        f"JOIN (SELECT {kcols}, min(__kalla_rank) AS __kalla_best FROM {ranked} "
        f"GROUP BY {kcols}) b ON {on('b')} AND u.__kalla_rank = b.__kalla_best"
    )
    engine.replace_view(tag, query)
    return tag


def _matched_keys(side: Side, keys: list[str], matched: str) -> str:
    fields = ", ".join(
        f"get_field({side.value}_key, {_lit(k)}) AS {quote(f'k{j}')}" for j, k in enumerate(keys)
    )
    return f"SELECT {fields} FROM {quote(matched)}"


def _key_join(keys: list[str], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote(k)} = {right}.{quote(f'k{j}')}" for j, k in enumerate(keys))


def unmatched_query(
    engine: Engine,
    side: Side,
    *,
    records: dict[Side, str],
    matched: str,
    rules: list[Rule],
    outputs: list[RuleOutput],
    sides: dict[Side, SideTable],
    suggested: Path | None,
    scratch: Path,
    explain: bool = True,
) -> str:
    """SQL for ``side``'s unmatched records: every source column, then the reason columns.

    ``records`` names each side's table of records (filters applied, NULL keys included);
    ``matched`` the table of matched pairs. Re-points the aliases while it works.
    ``explain=False`` leaves the reason columns out (the plain anti-join, faster).
    """
    if not explain:
        keys = sides[side].keys
        return (
            f"SELECT s.* FROM {quote(records[side])} s "
            f"LEFT ANTI JOIN ({_matched_keys(side, keys, matched)}) m ON {_key_join(keys, 's', 'm')}"
        )

    def point_views(this: Side) -> None:
        # Near misses: this side's unmatched records against all the other side's records.
        for s in Side:
            keys = sides[s].keys
            not_null = " AND ".join(f"s.{quote(k)} IS NOT NULL" for k in keys)
            anti = (
                f"LEFT ANTI JOIN ({_matched_keys(s, keys, matched)}) m ON {_key_join(keys, 's', 'm')} "
                if s is this
                else ""
            )
            engine.replace_view(
                sides[s].alias, f"SELECT s.* FROM {quote(records[s])} s {anti}WHERE {not_null}"
            )

    keys = sides[side].keys
    reasons = reasons_table(
        engine, side, rules=rules, outputs=outputs, sides=sides,
        suggested=suggested, scratch=scratch, point_views=point_views,
    )  # fmt: skip
    null_check = " OR ".join(f"s.{quote(k)} IS NULL" for k in keys)
    attempted = "make_array(" + ", ".join(_lit(r.name) for r in rules) + ")"
    return (
        f"SELECT s.*, CASE WHEN {null_check} THEN 'null_key' "
        f"ELSE coalesce(r._reason, 'no_candidate') END AS _reason, "
        f"CASE WHEN {null_check} THEN NULL ELSE {attempted} END AS _rules_attempted, "
        f"CASE WHEN r.c_rule IS NULL THEN NULL ELSE named_struct('rule', r.c_rule, 'key', r.c_key, "
        f"'predicate', r.c_predicate, 'difference', r.c_difference) END AS {CLOSEST} "
        f"FROM {quote(records[side])} s "
        f"LEFT ANTI JOIN ({_matched_keys(side, keys, matched)}) m ON {_key_join(keys, 's', 'm')} "
        f"LEFT JOIN {reasons} r ON {_key_join(keys, 's', 'r')}"
    )


def reason_fields(side: Side, sides: dict[Side, SideTable], explain: bool = True) -> list[pa.Field]:
    """The columns kalla adds to a side's unmatched records (none with ``explain=False``)."""
    if not explain:
        return []
    other = side.other
    key = pa.struct([pa.field(k, sides[other].columns[k]) for k in sides[other].keys])
    closest = pa.struct([
        ("rule", pa.string()), ("key", key), ("predicate", pa.string()), ("difference", _DIFF),
    ])  # fmt: skip
    return [
        pa.field("_reason", pa.string(), nullable=False),
        pa.field("_rules_attempted", pa.list_(pa.string())),
        pa.field(CLOSEST, closest),
    ]


def never_offered(
    table: pa.Table,
    side: Side,
    sides: dict[Side, SideTable],
    rules: list[str],
    explain: bool = True,
) -> pa.Table:
    """Reason columns for records no rule could see: a NULL primary key, or a NULL join key."""
    if not explain:
        return table
    import pyarrow.compute as pc

    null_key = pa.array([False] * table.num_rows, pa.bool_())
    for k in sides[side].keys:
        null_key = pc.or_(null_key, pc.is_null(table.column(k)))
    fields = reason_fields(side, sides)
    reason = pc.if_else(null_key, "null_key", "no_candidate")
    attempted = pa.array([None if n else rules for n in null_key.to_pylist()], fields[1].type)
    closest = pa.nulls(table.num_rows, fields[2].type)
    return (
        table.append_column(fields[0], reason)
        .append_column(fields[1], attempted)
        .append_column(fields[2], closest)
    )
