"""Ground truth: kalla's answers equal an independent DuckDB computation on every scenario shape.

The data comes from the benchmark generator (the original's shapes: 1:1 with tolerance, split,
batch, cross), which also knows the right counts by construction.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

import kalla
from benchmarks.duckdb_baseline import _INVOICE_TYPES, _PAYMENT_TYPES, MATCH_SQL
from benchmarks.generate import BenchData, generate

SHAPES = {"one_to_one": 4000, "split": 2000, "batch": 3000, "cross": 1200}


_CACHE: dict[tuple[str, str], BenchData] = {}


def _data(shape: str, fmt: str, factory: pytest.TempPathFactory) -> BenchData:
    if (shape, fmt) not in _CACHE:
        _CACHE[shape, fmt] = generate(
            shape, SHAPES[shape], factory.mktemp(f"{shape}_{fmt}"), seed=7, fmt=fmt
        )
    return _CACHE[shape, fmt]


def duckdb_truth(data: BenchData) -> dict[str, set]:
    con = duckdb.connect()
    for table, path, types in (
        ("invoices", data.left, _INVOICE_TYPES),
        ("payments", data.right, _PAYMENT_TYPES),
    ):
        if data.fmt == "csv":
            cols = ", ".join(f"'{k}': '{v}'" for k, v in types.items())
            con.execute(
                f"CREATE TABLE {table} AS SELECT * FROM read_csv('{path}', header=true, columns={{{cols}}})"
            )
        else:
            casts = ", ".join(f"CAST({k} AS {v}) AS {k}" for k, v in types.items())
            con.execute(f"CREATE TABLE {table} AS SELECT {casts} FROM read_parquet('{path}')")
    sql = MATCH_SQL[data.shape]
    pairs = set(con.execute(f"SELECT DISTINCT invoice_id, payment_id FROM ({sql})").fetchall())
    left = {
        r[0]
        for r in con.execute(
            f"SELECT invoice_id FROM invoices WHERE invoice_id NOT IN (SELECT invoice_id FROM ({sql}))"
        ).fetchall()
    }
    right = {
        r[0]
        for r in con.execute(
            f"SELECT payment_id FROM payments WHERE payment_id NOT IN (SELECT payment_id FROM ({sql}))"
        ).fetchall()
    }
    return {"pairs": pairs, "left": left, "right": right}


def kalla_answer(
    data: BenchData, out: Path, *, declared_schema: bool
) -> tuple[kalla.RunResult, dict[str, set]]:
    raw = yaml.safe_load(data.recipe.read_text())
    if not declared_schema:
        for side in ("left", "right"):
            raw["sources"][side].pop("schema", None)
    recipe = kalla.Recipe.from_dict(raw, base_dir=data.directory)
    result = kalla.reconcile(recipe, output=out)
    matched = pq.read_table(
        result.output_paths.matched, columns=["left_key", "right_key"]
    ).to_pylist()
    pairs = {(m["left_key"]["invoice_id"], m["right_key"]["payment_id"]) for m in matched}
    left = set(pq.read_table(result.output_paths.unmatched_left).column("invoice_id").to_pylist())
    right = set(pq.read_table(result.output_paths.unmatched_right).column("payment_id").to_pylist())
    return result, {"pairs": pairs, "left": left, "right": right}


CASES = (
    [(s, "csv", True) for s in SHAPES]
    + [(s, "csv", False) for s in SHAPES]
    + [(s, "parquet", True) for s in SHAPES]
)


@pytest.mark.parametrize(
    ("shape", "fmt", "declared_schema"),
    CASES,
    ids=[f"{s}-{f}-{'declared' if d else 'inferred'}" for s, f, d in CASES],
)
def test_kalla_equals_duckdb_and_the_generator(
    shape: str,
    fmt: str,
    declared_schema: bool,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    data = _data(shape, fmt, tmp_path_factory)
    result, got = kalla_answer(data, tmp_path, declared_schema=declared_schema)
    truth = duckdb_truth(data)
    assert got["pairs"] == truth["pairs"]
    assert got["left"] == truth["left"]
    assert got["right"] == truth["right"]
    expected = json.loads((data.directory / "manifest.json").read_text())["expected"]
    assert (result.matched_count, result.unmatched_left_count, result.unmatched_right_count) == (
        expected["matched"], expected["unmatched_left"], expected["unmatched_right"],
    )  # fmt: skip
    counts = result.metadata.counts
    assert counts["left"].records == data.left_rows and counts["right"].records == data.right_rows


def test_tolerance_boundary_cases_are_in_the_data_and_match(tmp_path: Path) -> None:
    data = generate("one_to_one", 2000, tmp_path / "d", seed=3)
    con = duckdb.connect()
    diffs = {
        r[0]
        for r in con.execute(
            f"SELECT abs(CAST(i.amount AS DECIMAL(18,2)) - CAST(p.paid_amount AS DECIMAL(18,2))) "
            f"FROM read_csv('{data.left}', all_varchar=true) i JOIN read_csv('{data.right}', all_varchar=true) p "
            f"ON i.invoice_id = p.reference_number"
        ).fetchall()
    }
    assert {0.01, 0.02, 0.03} <= {float(d) for d in diffs}
    _, got = kalla_answer(data, tmp_path / "out", declared_schema=False)
    assert got["pairs"] == duckdb_truth(data)["pairs"]
