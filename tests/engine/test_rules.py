"""Rules: waterfall order, exclusive best-first choice, ambiguity, sums, suggestions.

Each behaviour is checked against an independent computation in plain Python (or DuckDB).
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

import kalla
from benchmarks.generate import generate
from tests.conftest import Workspace


def run(ws: Workspace, rules: list[dict[str, Any]], **kw: Any) -> kalla.RunResult:
    recipe = ws.recipe("SELECT 1", **kw)
    import yaml

    data = yaml.safe_load(recipe.read_text())
    data.pop("match_sql")
    data["rules"] = rules
    return kalla.reconcile(kalla.Recipe.from_dict(data, base_dir=ws.root), output=ws.root / "out")


def pairs(result: kalla.RunResult, path: str | None = None) -> list[tuple[Any, Any, str]]:
    rows = pq.read_table(path or result.output_paths.matched).to_pylist()
    return sorted((r["left_key"]["id"], r["right_key"]["id"], r["rule"]) for r in rows)


LEDGER = """
id,ref,amount,booked
1,A,100.00,2026-01-01
2,B,200.00,2026-01-02
3,C,300.00,2026-01-03
4,D,400.00,2026-01-04
"""
BANK = """
id,ref,amount,value_date
10,A,100.00,2026-01-01
11,B,200.04,2026-01-03
12,C,299.90,2026-01-05
13,X,400.00,2026-01-04
"""


def test_waterfall_later_rules_see_only_unmatched_records(ws: Workspace) -> None:
    ws.write("left.csv", LEDGER)
    ws.write("right.csv", BANK)
    result = run(ws, [
        {"name": "exact", "match_sql": "SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref AND l.amount = r.amount"},
        {"name": "tolerance", "match_sql": "SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref AND tolerance_match(l.amount, r.amount, 0.05)"},
        {"name": "by_amount", "match_sql": "SELECT l.ref FROM l_src l JOIN r_src r ON l.amount = r.amount",
         "cardinality": "one_to_one"},
    ])  # fmt: skip
    # (1,10) is exact, so "tolerance" never sees it; (4,13) only matches on amount.
    assert pairs(result) == [(1, 10, "exact"), (2, 11, "tolerance"), (4, 13, "by_amount")]
    assert [(r.name, r.pairs, r.left_records, r.right_records) for r in result.metadata.rules] == [
        ("exact", 1, 1, 1), ("tolerance", 1, 1, 1), ("by_amount", 1, 1, 1),
    ]  # fmt: skip
    assert result.matched_count == 3
    assert [r["id"] for r in pq.read_table(result.output_paths.unmatched_left).to_pylist()] == [3]


def test_single_match_sql_is_one_rule_named_match_sql(ws: Workspace) -> None:
    ws.write("left.csv", LEDGER)
    ws.write("right.csv", BANK)
    result = kalla.reconcile(
        ws.recipe("SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref"), output=ws.root / "o"
    )
    assert {p[2] for p in pairs(result)} == {"match_sql"}
    assert [(r.name, r.pairs, r.left_records) for r in result.metadata.rules] == [
        ("match_sql", 3, 3)
    ]


def greedy(cands: list[tuple[Any, ...]]) -> list[tuple[int, int]]:
    """The reference: sort all pairs by (rank..., left, right) and take each whose records are free."""
    used_l: set[int] = set()
    used_r: set[int] = set()
    out = []
    for *_, left, right in sorted(cands):
        if left not in used_l and right not in used_r:
            used_l.add(left)
            used_r.add(right)
            out.append((left, right))
    return sorted(out)


def random_books(ws: Workspace, seed: int, n: int = 300) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    left = [{"id": i, "cur": rng.choice("AB"), "amount": Decimal(rng.randint(100, 130)) / 10,
             "day": rng.randint(1, 9)} for i in range(n)]  # fmt: skip
    right = [{"id": 1000 + i, "cur": rng.choice("AB"), "amount": Decimal(rng.randint(100, 130)) / 10,
              "day": rng.randint(1, 9)} for i in range(n)]  # fmt: skip
    for name, rows in (("left.csv", left), ("right.csv", right)):
        ws.write(name, "id,cur,amount,booked\n" + "".join(
            f"{r['id']},{r['cur']},{r['amount']:.2f},2026-01-0{r['day']}\n" for r in rows))  # fmt: skip
    return left, right


ONE_TO_ONE = {
    "name": "closest",
    "match_sql": "SELECT l.id FROM l_src l JOIN r_src r ON l.cur = r.cur AND tolerance_match(l.amount, r.amount, 0.3)",
    "cardinality": "one_to_one",
    "rank_by": ["abs(l.amount - r.amount)", "abs(l.booked - r.booked)"],
}


@pytest.mark.parametrize("seed", [1, 2])
def test_one_to_one_is_greedy_best_first_and_deterministic(ws: Workspace, seed: int) -> None:
    left, right = random_books(ws, seed)
    cands = [(abs(a["amount"] - b["amount"]), abs(a["day"] - b["day"]), a["id"], b["id"])
             for a in left for b in right if a["cur"] == b["cur"] and abs(a["amount"] - b["amount"]) <= Decimal("0.3")]  # fmt: skip
    result = run(ws, [ONE_TO_ONE])
    got = [(a, b) for a, b, _ in pairs(result)]
    assert got == greedy(cands)
    assert len({a for a, _ in got}) == len(got) == len({b for _, b in got})
    again = run(ws, [ONE_TO_ONE])
    assert pairs(again) == pairs(result)


@pytest.mark.parametrize(
    ("cardinality", "exclusive"), [("one_to_many", "right"), ("many_to_one", "left")]
)
def test_one_side_exclusive_cardinalities(ws: Workspace, cardinality: str, exclusive: str) -> None:
    left, right = random_books(ws, 5, n=120)
    rule = dict(ONE_TO_ONE, cardinality=cardinality)
    result = run(ws, [rule])
    got = [(a, b) for a, b, _ in pairs(result)]
    cands = [(abs(a["amount"] - b["amount"]), abs(a["day"] - b["day"]), a["id"], b["id"])
             for a in left for b in right if a["cur"] == b["cur"] and abs(a["amount"] - b["amount"]) <= Decimal("0.3")]  # fmt: skip
    best: dict[int, tuple] = {}
    for c in cands:
        owner = c[3] if exclusive == "right" else c[2]
        tie = (c[0], c[1], c[2] if exclusive == "right" else c[3])
        if owner not in best or tie < best[owner][0]:
            best[owner] = (tie, (c[2], c[3]))
    assert got == sorted(v[1] for v in best.values())


def test_ambiguous_records_can_be_left_unmatched(ws: Workspace) -> None:
    ws.write("left.csv", "id,amount\n1,10.00\n2,20.00\n")
    ws.write("right.csv", "id,amount\n7,10.00\n8,10.00\n9,20.00\n")
    rule = {"name": "amt", "match_sql": "SELECT l.id FROM l_src l JOIN r_src r ON l.amount = r.amount",
            "cardinality": "one_to_one", "rank_by": ["abs(l.amount - r.amount)"]}  # fmt: skip
    best = run(ws, [rule])
    assert [(a, b) for a, b, _ in pairs(best)] == [(1, 7), (2, 9)]
    strict = run(ws, [dict(rule, ambiguous="leave_unmatched")])
    assert [(a, b) for a, b, _ in pairs(strict)] == [(2, 9)]
    assert {r["id"] for r in pq.read_table(strict.output_paths.unmatched_left).to_pylist()} == {1}


def test_suggest_rules_write_suggestions_and_leave_records_unmatched(ws: Workspace) -> None:
    ws.write("left.csv", LEDGER)
    ws.write("right.csv", BANK)
    result = run(ws, [
        {"name": "exact", "match_sql": "SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref AND l.amount = r.amount"},
        {"name": "maybe", "mode": "suggest", "cardinality": "one_to_one",
         "match_sql": "SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref AND tolerance_match(l.amount, r.amount, 1)"},
    ])  # fmt: skip
    assert pairs(result) == [(1, 10, "exact")]
    assert result.output_paths.suggested is not None
    assert pairs(result, result.output_paths.suggested) == [(2, 11, "maybe"), (3, 12, "maybe")]
    assert result.matched_count == 1 and result.unmatched_left_count == 3
    assert result.to_completion()["output_paths"]["suggested"] == result.output_paths.suggested


@pytest.mark.parametrize("shape", ["split", "batch"])
def test_sum_rules_match_groups_exactly(tmp_path: Path, shape: str) -> None:
    data = generate(shape, 1500, tmp_path / "d", seed=11)
    many, group_by, one_key = (
        ("right", "reference_number", "invoice_id")
        if shape == "split"
        else ("left", "batch_ref", "reference_number")
    )
    amounts = ("paid_amount", "amount") if shape == "split" else ("amount", "paid_amount")
    import yaml

    raw = yaml.safe_load(data.recipe.read_text())
    raw.pop("match_sql")
    raw["rules"] = [{"name": "sums", "kind": "aggregate", "many": many, "group_by": group_by,
                     "many_amount": amounts[0], "one_key": one_key, "one_amount": amounts[1], "tolerance": "0.00"}]  # fmt: skip
    result = kalla.reconcile(
        kalla.Recipe.from_dict(raw, base_dir=data.directory), output=tmp_path / "out"
    )
    rows = pq.read_table(result.output_paths.matched).to_pylist()
    got = {(r["left_key"]["invoice_id"], r["right_key"]["payment_id"]) for r in rows}

    con = duckdb.connect()
    con.execute(f"CREATE TABLE inv AS SELECT * FROM read_csv('{data.left}', all_varchar=true)")
    con.execute(f"CREATE TABLE pay AS SELECT * FROM read_csv('{data.right}', all_varchar=true)")
    if shape == "split":
        truth = set(
            con.execute(
                "WITH g AS (SELECT reference_number k, sum(CAST(paid_amount AS DECIMAL(18,2))) s FROM pay GROUP BY 1) "
                "SELECT i.invoice_id, p.payment_id FROM inv i JOIN g ON i.invoice_id = g.k "
                "AND CAST(i.amount AS DECIMAL(18,2)) = g.s JOIN pay p ON p.reference_number = g.k"
            ).fetchall()
        )
    else:
        truth = set(
            con.execute(
                "WITH g AS (SELECT batch_ref k, sum(CAST(amount AS DECIMAL(18,2))) s FROM inv GROUP BY 1) "
                "SELECT i.invoice_id, p.payment_id FROM pay p JOIN g ON p.reference_number = g.k "
                "AND CAST(p.paid_amount AS DECIMAL(18,2)) = g.s JOIN inv i ON i.batch_ref = g.k"
            ).fetchall()
        )
    assert got == truth and got
    one_side = "left_key" if many == "right" else "right_key"
    groups: dict[str, set[Any]] = {}
    for r in rows:
        groups.setdefault(r["match_group"], set()).add(tuple(r[one_side].values()))
    assert all(g.startswith("sums:") and len(ones) == 1 for g, ones in groups.items())
    assert len({next(iter(v)) for v in groups.values()}) == len(groups)  # one group per record
    assert result.matched_count == len(truth)


def test_rules_are_validated_with_every_problem(ws: Workspace) -> None:
    with pytest.raises(kalla.RecipeInvalid) as info:
        run(ws, [
            {"name": "a", "match_sql": "DELETE FROM l_src", "cardinality": "one_to_few"},
            {"name": "a", "kind": "aggregate", "many": "right", "group_by": "(SELECT 1)",
             "many_amount": "x", "one_key": "y", "one_amount": "z"},
        ])  # fmt: skip
    text = str(info.value)
    assert "match_sql_forbidden" in text and "cardinality" in text and "plain expression" in text


def unmatched(result: kalla.RunResult, side: str) -> dict[Any, dict[str, Any]]:
    path = (
        result.output_paths.unmatched_left
        if side == "left"
        else result.output_paths.unmatched_right
    )
    return {r["id"]: r for r in pq.read_table(path).to_pylist()}


def test_every_exception_has_a_reason_and_the_closest_candidate(ws: Workspace) -> None:
    ws.write("left.csv", """
        id,ref,amount,booked
        1,A,100.00,2026-01-01
        2,B,200.00,2026-01-01
        3,C,300.00,2026-01-01
        4,D,400.00,2026-01-01
        5,E,500.00,2026-01-01
        ,G,600.00,2026-01-01
        7,F,700.00,2026-01-01
        """)  # fmt: skip
    ws.write("right.csv", """
        id,ref,amount,booked
        10,A,100.03,2026-01-01
        11,A,100.50,2026-01-01
        12,B,200.00,2026-01-09
        13,C,300.00,2026-01-01
        14,C,300.00,2026-01-02
        15,D,400.00,2026-01-01
        16,Z,1.00,2026-01-01
        17,F,699.00,2026-01-01
        """)  # fmt: skip
    rules = [
        {"name": "exact", "cardinality": "one_to_one",
         "match_sql": "SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref "
                      "AND tolerance_match(l.amount, r.amount, 0.02) AND date_within(l.booked, r.booked, 3)"},
        {"name": "review", "mode": "suggest",
         "match_sql": "SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref AND tolerance_match(l.amount, r.amount, 1.5) "
                      "AND NOT tolerance_match(l.amount, r.amount, 0.5)"},
    ]  # fmt: skip
    result = run(ws, rules)
    left, right = unmatched(result, "left"), unmatched(result, "right")
    # 1/A: nearest is 10, 0.03 off the amount (11 is further off)
    assert left[1]["_reason"] == "amount_outside_tolerance"
    assert left[1]["_closest_candidate"]["key"] == {"id": 10}
    assert left[1]["_closest_candidate"]["difference"] == Decimal("0.03")
    assert "tolerance_match" in left[1]["_closest_candidate"]["predicate"]
    # 2/B: amount fine, paid 8 days later
    assert left[2]["_reason"] == "date_outside_window"
    assert left[2]["_closest_candidate"]["difference"] == Decimal(8)
    # 3/C matched one of two equal payments; the other lost to it
    assert 3 not in left and right[14]["_reason"] == "used_by_other_match"
    assert right[14]["_closest_candidate"]["key"] == {"id": 3}
    # 4/D matched 15; 5/E has nothing; 6 has no key; 16/Z has nothing
    assert left[5]["_reason"] == "no_candidate" and left[5]["_closest_candidate"] is None
    assert left[None]["_reason"] == "null_key" and left[None]["_rules_attempted"] is None
    assert right[16]["_reason"] == "no_candidate"
    # 7/F: the suggest rule proposes 17 (1.00 off): awaiting a person, still unmatched
    assert left[7]["_reason"] == "suggested" and left[7]["_closest_candidate"]["rule"] == "review"
    assert left[5]["_rules_attempted"] == ["exact", "review"]


def test_ambiguous_records_say_so(ws: Workspace) -> None:
    ws.write("left.csv", "id,amount\n1,10.00\n")
    ws.write("right.csv", "id,amount\n7,10.00\n8,10.00\n")
    rule = {"name": "amt", "match_sql": "SELECT l.id FROM l_src l JOIN r_src r ON l.amount = r.amount",
            "cardinality": "one_to_one", "ambiguous": "leave_unmatched"}  # fmt: skip
    result = run(ws, [rule])
    assert unmatched(result, "left")[1]["_reason"] == "ambiguous"
    assert unmatched(result, "left")[1]["_closest_candidate"]["key"] == {"id": 7}


def test_the_readme_rules_example_does_what_the_readme_says(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "rules.yaml"
    result = kalla.reconcile(example, output=tmp_path)
    assert [(r.name, r.pairs) for r in result.metadata.rules] == [
        ("exact", 180), ("within_2_cents", 12), ("split_payments", 12), ("review", 10),
    ]  # fmt: skip
    groups = {
        r["match_group"]
        for r in pq.read_table(result.output_paths.matched).to_pylist()
        if r["match_group"]
    }
    assert len(groups) == 6
    reasons = [r["_reason"] for r in pq.read_table(result.output_paths.unmatched_left).to_pylist()]
    assert reasons.count("no_candidate") == 32 and reasons.count("suggested") == 10
    reasons = [r["_reason"] for r in pq.read_table(result.output_paths.unmatched_right).to_pylist()]
    assert reasons.count("no_candidate") == 10
