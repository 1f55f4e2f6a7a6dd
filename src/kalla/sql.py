"""``match_sql``: the trust boundary, parsed and rewritten through a SQL AST (sqlglot).

Three jobs, all before DataFusion sees the query:

* :func:`check_read_only` accepts exactly one ``SELECT``/``WITH`` query and refuses
  everything else (DDL, DML, ``COPY``, ``SET``, several statements), so a recipe
  can never write, read other files, or change the session.
* :func:`plan_match` makes every output row say which left and which right record it
  came from: it appends each side's primary-key columns under reserved names to the
  projection, so keys need not be projected, may share names (``id``), and may be
  composite of any type (seed S2). Same-named output columns get their qualifier
  (``i.amount``, ``p.amount``) so evidence never has two columns of one name.
* kalla's UDFs have exact signatures; arguments are wrapped in casts chosen from the
  argument's type so ``tolerance_match`` is decimal-exact whatever the column type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import sqlglot
from sqlglot import exp

from .errors import MatchSqlForbidden, MatchSqlInvalid, MatchSqlUnsupported
from .job import Side

__all__ = [
    "MONEY",
    "RESERVED_PREFIX",
    "MatchPlan",
    "SideTable",
    "check_read_only",
    "key_column",
    "plan_match",
    "prepare_sql",
    "quote",
]

DIALECT = "postgres"
RESERVED_PREFIX = "__kalla_"
#: The type money arguments are brought to: exact, 27 integer and 10 fractional digits.
MONEY = pa.decimal128(37, 10)
_MONEY_SQL = "Decimal128(37, 10)"

_FORBIDDEN = (
    exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
    exp.Copy, exp.Set, exp.Command, exp.Into, exp.Use, exp.TruncateTable, exp.Transaction,
    exp.Commit, exp.Rollback, exp.Pragma, exp.LoadData, exp.Describe, exp.Grant,
)  # fmt: skip


def quote(identifier: str) -> str:
    """``identifier`` as a quoted SQL identifier (seed D6): every name kalla writes into SQL."""
    return '"' + identifier.replace('"', '""') + '"'


#: Evidence column names the match output may not use itself.
EVIDENCE_COLUMNS = ("left_key", "right_key", "rule", "match_group")


def key_column(side: Side) -> str:
    """Reserved name of the struct column that carries a side's primary key in the rewritten query."""
    return f"{RESERVED_PREFIX}{side.value}_key"


def _parse(sql: str, what: str = "match_sql") -> exp.Expr:
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except sqlglot.errors.ParseError as exc:
        detail = exc.errors[0]["description"] if exc.errors else str(exc)
        raise MatchSqlInvalid(f"{what} does not parse: {detail}") from None
    except sqlglot.errors.SqlglotError as exc:
        raise MatchSqlInvalid(f"{what} does not parse: {exc}") from None
    if len(statements) != 1:
        raise MatchSqlForbidden(
            f"{what} must be exactly one query, found {len(statements)} statements"
        )
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise MatchSqlForbidden(
            f"{what} must be a read-only SELECT or WITH query, not {_kind(tree)}"
        )
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise MatchSqlForbidden(f"{what} must be read-only; it contains {_kind(node)}")
    return tree


def _kind(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return f"a {str(node.this).upper()} command"
    return f"a {type(node).__name__.upper()} statement"


def check_read_only(sql: str) -> None:
    """Raise ``MatchSqlForbidden``/``MatchSqlInvalid`` unless ``sql`` is one read-only query."""
    _parse(sql)


def parse_expression(text: str) -> exp.Expr:
    """One scalar SQL expression (no queries inside), for rank_by and aggregate rules."""
    try:
        tree = sqlglot.parse_one(text, read=DIALECT, into=exp.Condition)
    except sqlglot.errors.SqlglotError as exc:
        raise MatchSqlInvalid(f"{text!r} is not a SQL expression: {exc}") from None
    if isinstance(tree, exp.Query) or any(
        isinstance(n, (exp.Query, *_FORBIDDEN)) for n in tree.walk()
    ):
        raise MatchSqlForbidden(f"{text!r} must be a plain expression, not a query")
    return tree


def check_expression(text: str) -> None:
    """Raise unless ``text`` is one plain SQL expression."""
    parse_expression(text)


@dataclass
class SideTable:
    """What the rewrite needs to know about one side's table."""

    alias: str
    keys: list[str]
    columns: dict[str, pa.DataType] = field(default_factory=dict)


@dataclass(frozen=True)
class MatchPlan:
    """The rewritten query; each row carries a struct column of each side's key values."""

    sql: str


def _norm(ident: exp.Identifier | str) -> str:
    """An identifier as DataFusion resolves it: unquoted names fold to lower case."""
    if isinstance(ident, exp.Identifier):
        return ident.this if ident.quoted else ident.this.lower()
    return ident


def _tables_in(node: exp.Expr, ctes: dict[str, set[str]]) -> set[str]:
    """The source tables a query or table expression reads, through CTEs and subqueries."""
    found: set[str] = set()
    for t in node.find_all(exp.Table):
        name = _norm(t.this) if isinstance(t.this, exp.Identifier) else t.name
        found |= ctes.get(name, {name})
    return found


def _cte_lineage(tree: exp.Expr) -> dict[str, set[str]]:
    lineage: dict[str, set[str]] = {}
    for cte in tree.find_all(exp.CTE):
        lineage[_norm(cte.args["alias"].this)] = _tables_in(cte.this, lineage)
    return lineage


def _from_items(select: exp.Select) -> list[exp.Expr]:
    items = []
    from_ = select.args.get("from_") or select.args.get("from")
    if from_ is not None:
        items.append(from_.this)
    for join in select.args.get("joins") or []:
        items.append(join.this)
    return items


def _qualifier(item: exp.Expr) -> str:
    alias = item.args.get("alias")
    if alias is not None and alias.this is not None:
        return _norm(alias.this)
    if isinstance(item, exp.Table):
        return _norm(item.this)
    raise MatchSqlUnsupported("give every subquery in FROM an alias (… ) AS name")


def _selects(tree: exp.Expr) -> list[exp.Select]:
    """The SELECTs whose rows are the query's output (each branch of a set operation)."""
    if isinstance(tree, exp.Select):
        return [tree]
    if isinstance(tree, exp.SetOperation):
        return _selects(tree.left) + _selects(tree.right)
    if isinstance(tree, exp.Subquery):
        return _selects(tree.this)
    raise MatchSqlUnsupported(f"match_sql's outer query must be a SELECT, not {_kind(tree)}")


def plan_match(
    sql: str, sides: dict[Side, SideTable], extra: dict[str, str] | None = None
) -> MatchPlan:
    """Rewrite ``sql`` so every output row carries both sides' primary keys.

    ``extra`` maps reserved output names to expressions over the query's own tables
    (``rank_by``), appended to the projection next to the keys.
    """
    tree = _parse(sql)
    ctes = _cte_lineage(tree)
    aliases = {side: sides[side].alias for side in Side}
    known = set(aliases.values()) | set(ctes)
    for t in tree.find_all(exp.Table):
        name = _norm(t.this) if isinstance(t.this, exp.Identifier) else t.name
        if t.args.get("db") or name not in known:
            raise MatchSqlInvalid(
                f"match_sql reads table {t.sql(dialect=DIALECT)!r}; it may only read "
                f"{aliases[Side.LEFT]!r} and {aliases[Side.RIGHT]!r} (and its own CTEs)"
            )
    selects = _selects(tree)
    for select in selects:
        _inject_keys(select, sides, ctes)
        for name, text in (extra or {}).items():
            select.select(
                exp.alias_(parse_expression(text), exp.to_identifier(name, quoted=True)), copy=False
            )
    _cast_udf_arguments(tree, sides, ctes)
    return MatchPlan(sql=tree.sql(dialect=DIALECT))


def _side_items(
    select: exp.Select, sides: dict[Side, SideTable], ctes: dict[str, set[str]]
) -> dict[Side, str]:
    """Which FROM/JOIN item of ``select`` is each side, by qualifier."""
    found: dict[Side, list[str]] = {Side.LEFT: [], Side.RIGHT: []}
    for item in _from_items(select):
        reads = _tables_in(item, ctes)
        for side in Side:
            if sides[side].alias in reads and sides[side.other].alias not in reads:
                found[side].append(_qualifier(item))
    out = {}
    for side in Side:
        alias = sides[side].alias
        if not found[side]:
            raise MatchSqlUnsupported(
                f"match_sql must read {alias!r} ({side.value} side) in the FROM or JOIN clause of "
                f"its outer SELECT, so each output row is a ({Side.LEFT.value}, {Side.RIGHT.value}) "
                f"pair; write it as: SELECT … FROM {sides[Side.LEFT].alias} l JOIN "
                f"{sides[Side.RIGHT].alias} r ON …"
            )
        if len(found[side]) > 1:
            raise MatchSqlUnsupported(
                f"match_sql reads {alias!r} ({side.value} side) more than once in one FROM clause; "
                "each output row must pair exactly one left and one right record"
            )
        out[side] = found[side][0]
    return out


def _inject_keys(
    select: exp.Select, sides: dict[Side, SideTable], ctes: dict[str, set[str]]
) -> None:
    if select.args.get("group") or any(
        isinstance(p.unalias(), exp.AggFunc) for p in select.expressions
    ):
        raise MatchSqlUnsupported(
            "match_sql aggregates (GROUP BY or an aggregate function); a match must be one row per "
            "(left record, right record) pair. Aggregate in a CTE and join it back to the records, "
            "or use a sum-matching rule."
        )
    quals = _side_items(select, sides, ctes)
    _disambiguate(select, sides, quals)
    for side in Side:
        struct = _key_struct(sides[side].keys, quals[side])
        select.select(
            exp.alias_(struct, exp.to_identifier(key_column(side), quoted=True)), copy=False
        )


def _key_struct(keys: list[str], qualifier: str) -> exp.Expr:
    """``named_struct('k1', q."k1", …)``: one side's primary key as one value of its own types."""
    args: list[exp.Expr] = []
    for key in keys:
        args.append(exp.Literal.string(key))
        args.append(
            exp.column(
                exp.to_identifier(key, quoted=True), table=exp.to_identifier(qualifier, quoted=True)
            )
        )
    return exp.Anonymous(this="named_struct", expressions=args)


def _disambiguate(select: exp.Select, sides: dict[Side, SideTable], quals: dict[Side, str]) -> None:
    """Expand stars over the sides and give same-named output columns their qualifier."""
    by_qual = {quals[s]: sides[s] for s in Side}
    expanded: list[exp.Expr] = []
    for proj in select.expressions:
        if isinstance(proj, exp.Star):
            targets = [quals[Side.LEFT], quals[Side.RIGHT]] if _plain_star_ok(select, quals) else []
        elif isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star):
            targets = [_norm(proj.args["table"])] if _norm(proj.args["table"]) in by_qual else []
        else:
            expanded.append(proj)
            continue
        if not targets or any(not by_qual[q].columns for q in targets):
            expanded.append(proj)
            continue
        for q in targets:
            for name in by_qual[q].columns:
                if not name.startswith(RESERVED_PREFIX):
                    expanded.append(
                        exp.column(
                            exp.to_identifier(name, quoted=True),
                            table=exp.to_identifier(q, quoted=True),
                        )
                    )
    names: list[str | None] = [_output_name(p) for p in expanded]
    counts: dict[str, int] = {}
    for n in names:
        if n is not None:
            counts[n] = counts.get(n, 0) + 1
    for idx, (proj, maybe) in enumerate(zip(expanded, names, strict=True)):
        if maybe is None:
            continue
        name = maybe
        if name.startswith(RESERVED_PREFIX) or name in EVIDENCE_COLUMNS:
            raise MatchSqlInvalid(
                f"match_sql outputs a column named {name!r}, which kalla reserves for evidence; "
                "rename it with AS"
            )
        if counts[name] > 1 and isinstance(proj, exp.Column) and proj.table:
            expanded[idx] = exp.alias_(
                proj, exp.to_identifier(f"{_norm(proj.args['table'])}.{name}", quoted=True)
            )
    select.set("expressions", expanded)


def _plain_star_ok(select: exp.Select, quals: dict[Side, str]) -> bool:
    return len(_from_items(select)) == 2


def _output_name(proj: exp.Expr) -> str | None:
    if isinstance(proj, exp.Alias):
        return _norm(proj.args["alias"])
    if isinstance(proj, exp.Column) and not isinstance(proj.this, exp.Star):
        return _norm(proj.this)
    return None


# --- UDF argument casts -------------------------------------------------------------------------

#: kalla UDF → the canonical kind of each argument ("money", "date", "text", "int").
UDF_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "tolerance_match": ("money", "money", "money"),
    "pct_tolerance_match": ("money", "money", "money"),
    "date_within": ("date", "date", "int"),
    "normalize_ref": ("text",),
}


def prepare_sql(
    sql: str, tables: dict[str, dict[str, pa.DataType]] | None = None, *, what: str = "match_sql"
) -> str:
    """Parse ``sql`` (read-only check included) and cast kalla UDF arguments; no key injection.

    ``what`` names the SQL in error messages (``match_sql``, ``query``).
    """
    tree = _parse(sql, what)
    sides: dict[Side, SideTable] = {}
    _cast_udf_arguments(tree, sides, _cte_lineage(tree), tables or {})
    return tree.sql(dialect=DIALECT)


def _cast_udf_arguments(
    tree: exp.Expr,
    sides: dict[Side, SideTable],
    ctes: dict[str, set[str]],
    tables: dict[str, dict[str, pa.DataType]] | None = None,
) -> None:
    schemas = dict(tables or {})
    for s in sides.values():
        schemas[s.alias] = s.columns
    calls = [
        node for node in tree.walk()
        if isinstance(node, exp.Anonymous) and node.name.lower() in UDF_ARGUMENTS
    ]  # fmt: skip
    for call in reversed(calls):  # innermost first, so nested calls see cast arguments
        kinds = UDF_ARGUMENTS[call.name.lower()]
        args = list(call.expressions)
        if len(args) != len(kinds):
            raise MatchSqlInvalid(
                f"{call.name.lower()} takes {len(kinds)} arguments, got {len(args)}: {call.sql(dialect=DIALECT)}"
            )
        typed = [
            _cast(arg, kind, _type_of(arg, call, schemas, ctes))
            for arg, kind in zip(args, kinds, strict=True)
        ]
        call.set("expressions", typed)
        call.set("this", call.name.lower())


def _type_of(
    arg: exp.Expr,
    call: exp.Expr,
    schemas: dict[str, dict[str, pa.DataType]],
    ctes: dict[str, set[str]],
) -> pa.DataType | None:
    if isinstance(arg, exp.Literal):
        return pa.decimal128(38, 10) if not arg.is_string else pa.string()
    if isinstance(arg, exp.Neg) and isinstance(arg.this, exp.Literal) and not arg.this.is_string:
        return pa.decimal128(38, 10)
    if not isinstance(arg, exp.Column) or isinstance(arg.this, exp.Star):
        return None
    select = call.find_ancestor(exp.Select)
    if select is None:
        return None
    name = _norm(arg.this)
    candidates: list[dict[str, pa.DataType]] = []
    for item in _from_items(select):
        if not isinstance(item, exp.Table):
            continue
        table = _norm(item.this)
        if table in ctes or table not in schemas:
            continue
        if arg.table and _norm(arg.args["table"]) != _qualifier(item):
            continue
        candidates.append(schemas[table])
    hits = [c[name] for c in candidates if name in c]
    return hits[0] if len(hits) == 1 else None


def _cast(arg: exp.Expr, kind: str, arrow: pa.DataType | None) -> exp.Expr:
    def arrow_cast(e: exp.Expr, to: str) -> exp.Expr:
        return exp.Anonymous(this="arrow_cast", expressions=[e, exp.Literal.string(to)])

    if kind == "money":
        if arrow is not None and (pa.types.is_decimal(arrow) or pa.types.is_integer(arrow)):
            if arrow == MONEY:
                return arg
            return arrow_cast(arg, _MONEY_SQL)
        if arrow is not None and (
            pa.types.is_string(arrow)
            or pa.types.is_large_string(arrow)
            or pa.types.is_string_view(arrow)
        ):
            return arrow_cast(arg, _MONEY_SQL)
        # Floats (and anything unknown) go through their shortest decimal text, so 100.02
        # stored as a binary float compares as the 100.02 that was written.
        return arrow_cast(arrow_cast(arg, "Utf8"), _MONEY_SQL)
    if kind == "date":
        return arrow_cast(arg, "Date32")
    if kind == "int":
        return arrow_cast(arg, "Int64")
    return arrow_cast(arg, "Utf8")


# --- near misses --------------------------------------------------------------------------------

#: Why a candidate failed, by the kalla function of the predicate it failed.
_REASONS = {
    "tolerance_match": "amount_outside_tolerance",
    "pct_tolerance_match": "amount_outside_tolerance",
    "date_within": "date_outside_window",
}


@dataclass(frozen=True)
class NearMissPlan:
    """Candidates that satisfy a rule's equalities, with each other predicate as a flag.

    ``sql`` yields ``left_key``, ``right_key``, ``__kalla_p{i}`` (predicate i held) and
    ``__kalla_d{i}`` (how far it missed, where that has a measure); ``predicates`` gives
    each predicate's reason code and text.
    """

    sql: str
    predicates: list[tuple[str, str]]


def _conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    if node is None:
        return []
    if isinstance(node, exp.And):
        return _conjuncts(node.left) + _conjuncts(node.right)
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    return [node]


def _only(node: exp.Expr, qualifier: str) -> bool:
    cols = list(node.find_all(exp.Column))
    return bool(cols) and all(c.table and _norm(c.args["table"]) == qualifier for c in cols)


def plan_near_miss(sql: str, sides: dict[Side, SideTable]) -> NearMissPlan | None:
    """The rule's query with only its cross-side equalities as the join, or ``None``.

    ``None`` when the query has no such equality (every pair would be a "candidate"),
    is not a single SELECT, or uses outer joins.
    """
    try:
        tree = _parse(sql)
        if not isinstance(tree, exp.Select):
            return None
        ctes = _cte_lineage(tree)
        quals = _side_items(tree, sides, ctes)
    except (MatchSqlInvalid, MatchSqlUnsupported, MatchSqlForbidden):
        return None
    joins = tree.args.get("joins") or []
    if any(j.side or (j.kind or "").upper() not in ("", "INNER", "CROSS") for j in joins):
        return None
    where = tree.args.get("where")
    conjuncts = _conjuncts(where.this if where is not None else None)
    for join in joins:
        conjuncts += _conjuncts(join.args.get("on"))
        join.set("on", exp.true() if join.args.get("on") is not None else None)
    equalities, predicates = [], []
    left, right = quals[Side.LEFT], quals[Side.RIGHT]
    for c in conjuncts:
        if isinstance(c, exp.EQ) and (
            (_only(c.left, left) and _only(c.right, right))
            or (_only(c.left, right) and _only(c.right, left))
        ):
            equalities.append(c)
        else:
            predicates.append(c)
    if not equalities or not predicates:
        return None
    texts = [p.sql(dialect=DIALECT, normalize_functions="lower") for p in predicates]
    projection: list[exp.Expr] = []
    for side in Side:
        projection.append(
            exp.alias_(_key_struct(sides[side].keys, quals[side]), f"{side.value}_key")
        )
    for i, pred in enumerate(predicates):
        projection.append(exp.alias_(pred.copy(), f"__kalla_p{i}"))
    tree.set("expressions", projection)
    tree.set("where", exp.Where(this=exp.and_(*equalities)))
    tree.set("distinct", None)
    tree.set("order", None)
    tree.set("limit", None)
    _cast_udf_arguments(tree, sides, ctes)
    reasons = []
    for i, proj in enumerate(tree.expressions[2:]):
        call = proj.unalias()
        name = call.name.lower() if isinstance(call, exp.Anonymous) else ""
        reasons.append(_REASONS.get(name, "condition_failed"))
        diff: exp.Expr = exp.null()
        if name in ("tolerance_match", "pct_tolerance_match"):
            a, b = call.expressions[0].copy(), call.expressions[1].copy()
            diff = exp.Abs(this=exp.Sub(this=a, expression=b))
        elif name == "date_within":
            a, b = (
                exp.Anonymous(
                    this="arrow_cast", expressions=[e.copy(), exp.Literal.string("Int32")]
                )
                for e in call.expressions[:2]
            )
            diff = exp.Abs(this=exp.Sub(this=a, expression=b))
        diff = exp.Anonymous(
            this="arrow_cast", expressions=[diff, exp.Literal.string("Decimal128(38, 10)")]
        )
        tree.select(exp.alias_(diff, f"__kalla_d{i}"), copy=False)
    return NearMissPlan(
        sql=tree.sql(dialect=DIALECT), predicates=list(zip(reasons, texts, strict=True))
    )
