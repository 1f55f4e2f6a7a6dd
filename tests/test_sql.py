"""match_sql is the trust boundary: one read-only query, rewritten to carry both keys."""

from __future__ import annotations

import pyarrow as pa
import pytest

from kalla import MatchSqlForbidden, MatchSqlInvalid, MatchSqlUnsupported, Side
from kalla.sql import SideTable, check_read_only, plan_match, quote

SIDES = {
    Side.LEFT: SideTable("l_src", ["id"], {"id": pa.int64(), "amount": pa.decimal128(18, 2)}),
    Side.RIGHT: SideTable("r_src", ["id"], {"id": pa.int64(), "amount": pa.float64()}),
}


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE l_src",
        "INSERT INTO l_src SELECT * FROM r_src",
        "UPDATE l_src SET amount = 0",
        "DELETE FROM l_src",
        "COPY l_src TO '/tmp/out.csv'",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE VIEW v AS SELECT 1",
        "SET datafusion.execution.batch_size = 1",
        "SELECT 1; SELECT 2",
        "SELECT * FROM l_src; DROP TABLE l_src",
        "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        "SELECT * INTO t2 FROM l_src",
        "EXPLAIN SELECT 1",
    ],
)
def test_anything_but_one_read_only_query_is_forbidden(sql: str) -> None:
    with pytest.raises(MatchSqlForbidden) as info:
        check_read_only(sql)
    assert info.value.code == "match_sql_forbidden"


def test_unparsable_sql_is_invalid() -> None:
    with pytest.raises(MatchSqlInvalid):
        check_read_only("SELECT * FROM")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM l_src l JOIN r_src r ON l.id = r.id",
        "WITH l AS (SELECT * FROM l_src WHERE amount > 0) SELECT l.amount FROM l JOIN r_src r ON l.id = r.id",
        "SELECT l.amount FROM l_src l JOIN r_src r ON l.id = r.id UNION ALL SELECT l.amount FROM l_src l, r_src r WHERE l.amount = 1",
    ],
)
def test_read_only_shapes_are_accepted(sql: str) -> None:
    check_read_only(sql)
    plan = plan_match(sql, SIDES)
    assert plan.sql.count('"__kalla_left_key"') == plan.sql.count('"__kalla_right_key"') >= 1


def test_keys_are_carried_even_when_not_projected() -> None:
    plan = plan_match("SELECT l.amount FROM l_src l JOIN r_src r ON l.amount = r.amount", SIDES)
    assert 'NAMED_STRUCT(\'id\', "l"."id") AS "__kalla_left_key"' in plan.sql
    assert 'NAMED_STRUCT(\'id\', "r"."id") AS "__kalla_right_key"' in plan.sql


def test_same_named_columns_get_their_qualifier() -> None:
    plan = plan_match("SELECT l.*, r.* FROM l_src l JOIN r_src r ON l.id = r.id", SIDES)
    assert '"l"."amount" AS "l.amount"' in plan.sql
    assert '"r"."id" AS "r.id"' in plan.sql


def test_money_udf_arguments_are_cast_exactly_by_type() -> None:
    plan = plan_match(
        "SELECT l.id FROM l_src l JOIN r_src r ON tolerance_match(l.amount, r.amount, 0.02)", SIDES
    )
    assert "ARROW_CAST(l.amount, 'Decimal128(37, 10)')" in plan.sql
    # floats go through their shortest decimal text
    assert "ARROW_CAST(ARROW_CAST(r.amount, 'Utf8'), 'Decimal128(37, 10)')" in plan.sql


@pytest.mark.parametrize(
    ("sql", "error", "words"),
    [
        ("SELECT * FROM l_src", MatchSqlUnsupported, "r_src"),
        (
            "SELECT count(*) FROM l_src l JOIN r_src r ON l.id = r.id",
            MatchSqlUnsupported,
            "aggregates",
        ),
        (
            "SELECT l.id FROM l_src l JOIN r_src r ON true GROUP BY l.id",
            MatchSqlUnsupported,
            "GROUP BY",
        ),
        (
            "SELECT * FROM l_src a JOIN l_src b ON a.id = b.id JOIN r_src r ON true",
            MatchSqlUnsupported,
            "more than once",
        ),
        ("SELECT * FROM l_src l JOIN secrets r ON true", MatchSqlInvalid, "may only read"),
        ("SELECT * FROM other.l_src l JOIN r_src r ON true", MatchSqlInvalid, "may only read"),
        ("SELECT l.id AS left_key FROM l_src l JOIN r_src r ON true", MatchSqlInvalid, "reserves"),
        (
            "SELECT tolerance_match(l.amount, r.amount) FROM l_src l JOIN r_src r ON true",
            MatchSqlInvalid,
            "3 arguments",
        ),
    ],
)
def test_queries_that_cannot_yield_pairs_say_how_to_fix_them(
    sql: str, error: type, words: str
) -> None:
    with pytest.raises(error, match=words):
        plan_match(sql, SIDES)


def test_identifiers_are_quoted() -> None:
    assert quote('we"ird name') == '"we""ird name"'
