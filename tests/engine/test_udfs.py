"""Financial UDFs at their boundaries, through SQL, for every column type."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest

from kalla.engine import Engine
from kalla.sql import prepare_sql


@pytest.fixture(scope="module")
def engine() -> Engine:
    eng = Engine()
    eng.register_arrow(
        "t",
        pa.table({
            "dec_a": pa.array([Decimal("100.00"), Decimal("100.00"), None], pa.decimal128(18, 2)),
            "dec_b": pa.array([Decimal("100.02"), Decimal("100.03"), Decimal("1.00")], pa.decimal128(18, 2)),
            "flt_a": pa.array([100.00, 100.00, 1.0]),
            "flt_b": pa.array([100.02, 100.03, None]),
            "int_a": pa.array([100, 100, 1]),
            "txt_b": pa.array(["100.02", "100.03", "1"]),
        }),
    )  # fmt: skip
    return eng


def col(engine: Engine, sql: str) -> list:
    return [
        next(iter(r.values())) for r in engine.rows(prepare_sql(sql, {"t": engine.schema("t")}))
    ]


def test_tolerance_is_exact_at_the_boundary_for_literals(engine: Engine) -> None:
    assert col(engine, "SELECT tolerance_match(100.00, 100.02, 0.02)") == [True]
    assert col(engine, "SELECT tolerance_match(100.00, 100.03, 0.02)") == [False]
    assert col(engine, "SELECT tolerance_match(100.02, 100.00, 0.02)") == [True]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("dec_a", "dec_b"),
        ("flt_a", "flt_b"),
        ("int_a", "dec_b"),
        ("dec_a", "txt_b"),
        ("flt_a", "txt_b"),
    ],
)
def test_tolerance_is_exact_whatever_the_column_types(engine: Engine, a: str, b: str) -> None:
    got = col(engine, f"SELECT tolerance_match({a}, {b}, 0.02) FROM t")
    assert got[:2] == [True, False]


def test_null_in_null_out(engine: Engine) -> None:
    assert col(engine, "SELECT tolerance_match(dec_a, dec_b, 0.02) FROM t")[2] is None
    assert col(engine, "SELECT normalize_ref(NULL)") == [None]
    assert col(engine, "SELECT date_within(NULL, DATE '2026-01-01', 3)") == [None]


def test_pct_tolerance_is_relative_to_the_left_value(engine: Engine) -> None:
    assert col(engine, "SELECT pct_tolerance_match(100.00, 102.00, 2)") == [True]
    assert col(engine, "SELECT pct_tolerance_match(100.00, 102.01, 2)") == [False]
    assert col(engine, "SELECT pct_tolerance_match(100.00, 97.99, 2)") == [False]
    assert col(engine, "SELECT pct_tolerance_match(flt_a, flt_b, 0.02) FROM t")[:2] == [True, False]


def test_date_within_counts_calendar_days(engine: Engine) -> None:
    assert col(engine, "SELECT date_within(DATE '2026-01-01', DATE '2026-01-04', 3)") == [True]
    assert col(engine, "SELECT date_within(DATE '2026-01-05', DATE '2026-01-01', 3)") == [False]
    assert col(engine, "SELECT date_within('2024-02-28', '2024-03-01', 2)") == [True]


def test_normalize_ref_keeps_only_letters_and_digits_upper_cased(engine: Engine) -> None:
    assert col(engine, "SELECT normalize_ref(' inv-2026/0001 ')") == ["INV20260001"]
    assert col(engine, "SELECT normalize_ref('Über #7')") == ["ÜBER7"]
    assert col(engine, "SELECT normalize_ref(12345)") == ["12345"]
