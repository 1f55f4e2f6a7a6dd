"""Running one rule: candidate pairs from SQL, then exclusive best-first choice.

Exclusive choice for ``one_to_one`` is the greedy assignment over all candidate pairs in
one total order — ``rank_by`` ascending, then left key, then right key — computed in SQL
rounds: every pair that is the best of both its left and its right record is accepted
(such a pair is exactly what greedy would accept), records in accepted pairs leave the pool,
repeat. ``one_to_many`` / ``many_to_one`` need one window per record of the exclusive side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from datafusion import DataFrame, col, lit

from ..rules import AggregateRule, Ambiguity, Cardinality, Rule
from ..side import Side
from ..sql import SideTable, key_column, plan_match, prepare_sql, quote
from ._session import Engine, parquet_rows

__all__ = [
    "RANK_PREFIX",
    "Choice",
    "RuleOutput",
    "choose",
    "combine",
    "pairs_dataframe",
    "part_counts",
    "run_rule",
]

RANK_PREFIX = "__kalla_rank_"


@dataclass
class RuleOutput:
    """A rule's pairs, plus what exception reasons need: its candidates and ambiguous records."""

    part: Path
    candidates: Path | None = None
    ranks: list[str] = field(default_factory=list)
    ambiguous: dict[Side, Path] = field(default_factory=dict)


@dataclass
class Choice:
    """Pairs chosen by a rule (a Parquet file) and the records left out as ambiguous."""

    selected: Path
    ambiguous: dict[Side, Path] = field(default_factory=dict)


def _key(side: Side) -> str:
    return f"{side.value}_key"


def _order(ranks: list[str], keys: dict[Side, list[str]], *tie: Side) -> str:
    # Window ORDER BY cannot take structs: order by the key's fields.
    parts = [f"{quote(r)} ASC NULLS LAST" for r in ranks]
    for side in tie:
        parts += [f"get_field({_key(side)}, {_literal(k)})" for k in keys[side]]
    return ", ".join(parts)


class _Tables:
    """Registers scratch Parquet files under fresh names."""

    def __init__(self, engine: Engine, scratch: Path, tag: str) -> None:
        self.engine, self.scratch, self.tag, self.n = engine, scratch, tag, 0

    def write(self, query: str, stem: str) -> tuple[str, Path, int]:
        self.n += 1
        path = self.scratch / f"{self.tag}_{stem}_{self.n}.parquet"
        self.engine.write_parquet(self.engine.dataframe(query), path)
        name = f"__kalla_{self.tag}_{stem}_{self.n}"
        self.engine.register_file(name, path)
        return name, path, parquet_rows(path)


def choose(
    engine: Engine,
    candidates: str,
    columns: list[str],
    *,
    cardinality: Cardinality,
    ranks: list[str],
    keys: dict[Side, list[str]],
    ambiguity: Ambiguity,
    scratch: Path,
    tag: str,
) -> Choice:
    """Choose pairs from the registered ``candidates`` table according to the rule."""
    tables = _Tables(engine, scratch, tag)
    cols = ", ".join(quote(c) for c in columns)
    exclusive = cardinality.exclusive()
    choice_ambiguous: dict[Side, Path] = {}
    pool = candidates
    if ambiguity is Ambiguity.LEAVE_UNMATCHED and exclusive:
        for side in sorted(exclusive):
            rank_order = _order(ranks, keys) or "1"
            name, path, _ = tables.write(
                f"SELECT {_key(side)} FROM (SELECT {_key(side)}, rank() OVER (PARTITION BY {_key(side)} "
                f"ORDER BY {rank_order}) AS __kalla_rk FROM {pool}) WHERE __kalla_rk = 1 "
                f"GROUP BY {_key(side)} HAVING count(*) > 1",
                f"ambiguous_{side.value}",
            )
            choice_ambiguous[side] = path
            pool, _, _ = tables.write(
                f"SELECT c.* FROM {pool} c LEFT ANTI JOIN {name} a ON c.{_key(side)} = a.{_key(side)}",
                "pool",
            )
    if not exclusive:
        name, path, _ = tables.write(f"SELECT {cols} FROM {pool}", "selected")
        return Choice(path, choice_ambiguous)
    if exclusive != {Side.LEFT, Side.RIGHT}:
        (side,) = exclusive
        _, path, _ = tables.write(
            f"SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {_key(side)} "
            f"ORDER BY {_order(ranks, keys, side.other)}) AS __kalla_rn FROM {pool}) WHERE __kalla_rn = 1",
            "selected",
        )
        return Choice(path, choice_ambiguous)
    accepted: list[str] = []
    while True:
        sel, _, n = tables.write(
            f"SELECT {cols} FROM (SELECT *, "
            f"row_number() OVER (PARTITION BY left_key ORDER BY {_order(ranks, keys, Side.RIGHT)}) AS __kalla_rl, "
            f"row_number() OVER (PARTITION BY right_key ORDER BY {_order(ranks, keys, Side.LEFT)}) AS __kalla_rr "
            f"FROM {pool}) WHERE __kalla_rl = 1 AND __kalla_rr = 1",
            "round",
        )
        if n == 0:
            break
        accepted.append(sel)
        pool, _, left = tables.write(
            f"SELECT c.* FROM {pool} c LEFT ANTI JOIN {sel} a ON c.left_key = a.left_key "
            f"LEFT ANTI JOIN {sel} b ON c.right_key = b.right_key",
            "pool",
        )
        if left == 0:
            break
    if not accepted:
        _, path, _ = tables.write(f"SELECT {cols} FROM {candidates} WHERE false", "selected")
    else:
        union = " UNION ALL ".join(f"SELECT {cols} FROM {t}" for t in accepted)
        _, path, _ = tables.write(union, "selected")
    return Choice(path, choice_ambiguous)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def pairs_dataframe(engine: Engine, sql: str, rule_name: str) -> DataFrame:
    """The pairs a rewritten ``match_sql`` (:func:`kalla.sql.plan_match`) outputs, as evidence
    carries them: the key structs named ``left_key`` / ``right_key``, and a ``rule`` column."""
    df = engine.dataframe(sql)
    for side in Side:
        df = df.with_column_renamed(key_column(side), _key(side))
    return df.with_column("rule", lit(pa.scalar(rule_name, pa.string())))


def run_rule(
    engine: Engine, rule: Rule, index: int, sides: dict[Side, SideTable], out: Path, scratch: Path
) -> RuleOutput:
    """Run one rule over the aliases as they are registered now; its pairs go to ``out``."""
    if isinstance(rule, AggregateRule):
        return RuleOutput(_run_aggregate(engine, rule, index, sides, out, scratch))
    exclusive = rule.cardinality is not Cardinality.MANY_TO_MANY
    ranks = {f"{RANK_PREFIX}{j}": e for j, e in enumerate(rule.rank_by)} if exclusive else {}
    plan = plan_match(rule.match_sql, sides, extra=ranks)
    df = pairs_dataframe(engine, plan.sql, rule.name)
    if not exclusive:
        engine.write_parquet(df, out)
        return RuleOutput(out)
    candidates = scratch / f"rule_{index}_candidates.parquet"
    engine.write_parquet(df, candidates)
    name = f"__kalla_candidates_{index}"
    engine.register_file(name, candidates)
    columns = [c for c in engine.schema(name).names if not c.startswith(RANK_PREFIX)]
    choice = choose(
        engine, name, columns, cardinality=rule.cardinality, ranks=list(ranks),
        keys={side: sides[side].keys for side in Side},
        ambiguity=rule.ambiguous, scratch=scratch, tag=f"r{index}",
    )  # fmt: skip
    os.replace(choice.selected, out)
    return RuleOutput(out, candidates, list(ranks), choice.ambiguous)


def _run_aggregate(
    engine: Engine,
    rule: AggregateRule,
    index: int,
    sides: dict[Side, SideTable],
    out: Path,
    scratch: Path,
) -> Path:
    many, one = rule.many, rule.many.other
    m_alias, o_alias = quote(sides[many].alias), quote(sides[one].alias)
    tables = _Tables(engine, scratch, f"a{index}")
    m_cols = {sides[many].alias: sides[many].columns}
    groups, _, _ = tables.write(
        prepare_sql(
            f"SELECT {rule.group_by} AS __kalla_group, sum({rule.many_amount}) AS __kalla_total, "
            f"count(*) AS __kalla_members FROM {m_alias} WHERE ({rule.group_by}) IS NOT NULL "
            f"GROUP BY {rule.group_by}",
            m_cols,
        ),
        "groups",
    )
    one_key = ", ".join(f"'{k}', o.{quote(k)}" for k in sides[one].keys)
    query = prepare_sql(
        f"SELECT named_struct({one_key}) AS {_key(one)}, named_struct('group', g.__kalla_group) AS {_key(many)}, "
        f"g.__kalla_group, g.__kalla_total, g.__kalla_members, "
        f"abs(({rule.one_amount}) - g.__kalla_total) AS {RANK_PREFIX}0 "
        f"FROM {o_alias} o JOIN {groups} g ON ({rule.one_key}) = g.__kalla_group "
        f"AND tolerance_match(({rule.one_amount}), g.__kalla_total, {rule.tolerance})",
        {
            sides[one].alias: sides[one].columns,
            groups: {f.name: f.type for f in engine.schema(groups)},
        },
    )
    candidates, _, _ = tables.write(query, "candidates")
    columns = [c for c in engine.schema(candidates).names if not c.startswith(RANK_PREFIX)]
    choice = choose(
        engine, candidates, columns, cardinality=Cardinality.ONE_TO_ONE, ranks=[f"{RANK_PREFIX}0"],
        keys={one: sides[one].keys, many: ["group"]},
        ambiguity=Ambiguity.BEST, scratch=scratch, tag=f"a{index}s",
    )  # fmt: skip
    chosen = f"__kalla_agg_chosen_{index}"
    engine.register_file(chosen, choice.selected)
    many_key = ", ".join(f"'{k}', m.{quote(k)}" for k in sides[many].keys)
    expand = (
        f"SELECT s.{_key(one)} AS __kalla_one, named_struct({many_key}) AS __kalla_many, "
        f"{_literal(rule.name)} AS rule, "
        f"{_literal(rule.name + ':')} || CAST(s.__kalla_group AS VARCHAR) AS match_group, "
        f"s.__kalla_total AS group_total, s.__kalla_members AS group_members "
        f"FROM {chosen} s JOIN {m_alias} m ON ({rule.group_by}) = s.__kalla_group"
    )
    left, right = (
        ("__kalla_one", "__kalla_many") if one is Side.LEFT else ("__kalla_many", "__kalla_one")
    )
    chosen_cols = {f.name: f.type for f in engine.schema(chosen)}
    engine.write_parquet(
        engine.dataframe(
            prepare_sql(
                f"SELECT {left} AS left_key, {right} AS right_key, rule, match_group, group_total, "
                f"group_members FROM ({expand})",
                {**m_cols, chosen: chosen_cols},
            )
        ),
        out,
    )
    return out


def part_counts(
    engine: Engine, part: Path, name: str, rule: Rule, *, records: bool = True
) -> dict[str, int]:
    """Distinct pairs and records of one rule's output (registered as ``name``).

    Exclusive sides need no counting: each of their records is in one pair. ``records=False``
    skips counting records (the caller derives them from the unmatched counts).
    """
    engine.register_file(name, part)
    rows = parquet_rows(part)
    # An aggregate rule uses each record of its "one" side in one group.
    exclusive = (
        {rule.many.other} if isinstance(rule, AggregateRule) else rule.cardinality.exclusive()
    )

    def distinct(cols: str) -> int:
        return int(
            engine.scalar(f"SELECT count(*) FROM (SELECT {cols} FROM {name} GROUP BY {cols})")
        )

    pairs = rows if exclusive else distinct("left_key, right_key")
    out = {"pairs": pairs, "left_records": -1, "right_records": -1}
    if records:
        for side in Side:
            out[f"{side.value}_records"] = rows if side in exclusive else distinct(_key(side))
    return out


def combine(engine: Engine, parts: list[Path], out: Path, sides: dict[Side, SideTable]) -> None:
    """Union rule outputs by column name into one file: evidence columns last."""
    if not parts:
        keys = {
            side: ", ".join(
                f"'{k}', arrow_cast(NULL, '{_df_type(sides[side].columns[k])}')"
                for k in sides[side].keys
            )
            for side in Side
        }
        engine.write_parquet(
            engine.dataframe(
                f"SELECT named_struct({keys[Side.LEFT]}) AS left_key, named_struct({keys[Side.RIGHT]}) AS right_key, "
                f"arrow_cast(NULL, 'Utf8') AS rule WHERE false"
            ),
            out,
        )
        return
    names = []
    for i, part in enumerate(parts):
        name = f"__kalla_combine_{out.stem}_{i}"
        engine.register_file(name, part)
        names.append(name)
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {n}" for n in names)
    df = engine.dataframe(f"SELECT * FROM ({union})")
    first = [
        c for c in df.schema().names if c not in ("left_key", "right_key", "rule", "match_group")
    ]
    last = [c for c in ("left_key", "right_key", "rule", "match_group") if c in df.schema().names]
    engine.write_parquet(df.select(*[col(quote(c)) for c in first + last]), out)


def _df_type(t: pa.DataType) -> str:
    return str(t)
