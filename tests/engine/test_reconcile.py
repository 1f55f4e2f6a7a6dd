"""Reconciliation semantics: pairs, exact unmatched sets, keys of any shape, typed failures."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import kalla
from kalla import (
    DuplicatePrimaryKey,
    EvidenceExists,
    MatchSqlForbidden,
    MatchSqlInvalid,
    PrimaryKeyMissing,
    SchemaMismatch,
    SourceNotFound,
    UnsupportedUri,
)
from kalla.connectors import (
    Connector,
    ConnectorContext,
    ConnectorRegistry,
    TableSource,
    default_registry,
)
from kalla.engine import run_job
from kalla.errors import Cancelled
from kalla.job import JobSource
from tests.conftest import Workspace

LEFT = """
id,ref,amount,currency
1,INV-1,100.00,USD
2,INV-2,200.50,USD
3,INV-3,300.00,EUR
4,INV-4,50.00,USD
"""
RIGHT = """
id,ref,amount,currency
10,inv 1,100.02,USD
11,INV-2,200.53,USD
12,INV-3,300.00,EUR
13,INV-9,1.00,USD
"""
REASON_COLUMNS = ["_reason", "_rules_attempted", "_closest_candidate"]
MATCH = (
    "SELECT l.ref, r.ref AS paid_ref FROM l_src l JOIN r_src r "
    "ON normalize_ref(l.ref) = normalize_ref(r.ref) AND tolerance_match(l.amount, r.amount, 0.02)"
)


def run(ws: Workspace, recipe: Path, **kw) -> kalla.RunResult:
    return kalla.reconcile(recipe, output=ws.root / "out", **kw)


def read(path: str) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_same_named_keys_not_projected(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    result = run(ws, ws.recipe(MATCH))
    assert (result.matched_count, result.unmatched_left_count, result.unmatched_right_count) == (
        2,
        2,
        2,
    )
    matched = read(result.output_paths.matched)
    assert [(m["left_key"]["id"], m["right_key"]["id"]) for m in matched] == [(1, 10), (3, 12)]
    assert {r["id"] for r in read(result.output_paths.unmatched_left)} == {2, 4}
    assert {r["id"] for r in read(result.output_paths.unmatched_right)} == {11, 13}


def test_unmatched_rows_keep_every_source_column_and_type(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    result = run(ws, ws.recipe(MATCH))
    table = pq.read_table(result.output_paths.unmatched_left)
    assert table.column_names == ["id", "ref", "amount", "currency", *REASON_COLUMNS]
    assert str(table.schema.field("amount").type) == "decimal128(18, 2)"
    assert Decimal("200.50") in table.column("amount").to_pylist()


def test_composite_keys_of_mixed_types(ws: Workspace) -> None:
    ws.write("left.csv", """
        entity,doc,booked,amount
        A,1,2026-01-01,10.00
        A,2,2026-01-01,20.00
        B,1,2026-01-02,10.00
        """)  # fmt: skip
    ws.write("right.csv", """
        bank,line,amount,entity
        X,1,10.00,A
        X,2,10.00,B
        Y,1,99.00,A
        """)  # fmt: skip
    recipe = ws.recipe(
        "SELECT l.amount FROM l_src l JOIN r_src r ON l.entity = r.entity AND l.amount = r.amount",
        left_key=["entity", "doc", "booked"],
        right_key=["bank", "line"],
    )
    result = run(ws, recipe)
    assert result.matched_count == 2
    keys = {
        (str(m["left_key"]["entity"]), m["left_key"]["doc"], str(m["left_key"]["booked"]))
        for m in read(result.output_paths.matched)
    }
    assert keys == {("A", 1, "2026-01-01"), ("B", 1, "2026-01-02")}
    assert [(r["entity"], r["doc"]) for r in read(result.output_paths.unmatched_left)] == [("A", 2)]
    assert [(r["bank"], r["line"]) for r in read(result.output_paths.unmatched_right)] == [("Y", 1)]
    schema = pq.read_schema(result.output_paths.matched)
    assert (
        str(schema.field("left_key").type)
        == "struct<entity: string, doc: int64, booked: date32[day]>"
    )


def test_many_to_many_pairs_count_distinct_pairs_and_records(ws: Workspace) -> None:
    ws.write("left.csv", "id,grp\n1,a\n2,a\n3,b\n")
    ws.write("right.csv", "id,grp\n7,a\n8,a\n9,c\n")
    result = run(ws, ws.recipe("SELECT l.grp FROM l_src l JOIN r_src r ON l.grp = r.grp"))
    assert result.matched_count == 4
    counts = result.metadata.counts
    assert counts["left"].matched_records == 2 and counts["right"].matched_records == 2
    assert result.unmatched_left_count == 1 and result.unmatched_right_count == 1


def test_duplicate_output_rows_are_counted_once(ws: Workspace) -> None:
    ws.write("left.csv", "id,grp\n1,a\n")
    ws.write("right.csv", "id,grp\n7,a\n")
    sql = "SELECT l.grp FROM l_src l JOIN r_src r ON l.grp = r.grp UNION ALL SELECT l.grp FROM l_src l JOIN r_src r ON l.id < r.id"
    result = run(ws, ws.recipe(sql))
    assert result.metadata.matched_rows == 2
    assert result.matched_count == 1


def test_null_keys_never_match_and_stay_unmatched(ws: Workspace) -> None:
    ws.write("left.csv", "id,ref\n1,A\n,A\n3,B\n")
    ws.write("right.csv", "id,ref\n7,A\n8,B\n")
    result = run(ws, ws.recipe("SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref"))
    assert result.matched_count == 2
    unmatched = read(result.output_paths.unmatched_left)
    assert unmatched == [
        {
            "id": None,
            "ref": "A",
            "_reason": "null_key",
            "_rules_attempted": None,
            "_closest_candidate": None,
        }
    ]
    assert result.metadata.counts["left"].null_key_records == 1


def test_duplicate_primary_keys_are_reported_with_examples(ws: Workspace) -> None:
    ws.write("left.csv", "id,ref\n1,A\n1,B\n2,C\n2,D\n2,E\n")
    ws.write("right.csv", "id,ref\n7,A\n")
    with pytest.raises(DuplicatePrimaryKey) as info:
        run(ws, ws.recipe("SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref"))
    assert "id=2 (3 records)" in info.value.message and "id=1 (2 records)" in info.value.message


def test_empty_and_header_only_sources(ws: Workspace) -> None:
    ws.write("left.csv", "id,ref\n")
    ws.write("right.csv", "id,ref\n7,A\n")
    result = run(ws, ws.recipe("SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref"))
    assert (result.matched_count, result.unmatched_left_count, result.unmatched_right_count) == (
        0,
        0,
        1,
    )
    assert pq.read_table(result.output_paths.unmatched_left).column_names == [
        "id",
        "ref",
        *REASON_COLUMNS,
    ]


def test_parquet_sources_work_like_csv(ws: Workspace, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv

    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    pq.write_table(pacsv.read_csv(ws.root / "left.csv"), ws.root / "left.parquet")
    result = run(ws, ws.recipe(MATCH, left="left.parquet"))
    assert (result.matched_count, result.unmatched_left_count) == (2, 2)


def test_declared_schema_columns_must_exist(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    recipe = ws.recipe(MATCH, left_opts={"schema": ["id", "amount", "booked_on", "memo"]})
    with pytest.raises(SchemaMismatch, match=r"\['booked_on', 'memo'\]"):
        run(ws, recipe)


def test_missing_primary_key_column(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    with pytest.raises(PrimaryKeyMissing, match="invoice_no"):
        run(ws, ws.recipe(MATCH, left_key=["invoice_no"]))


def test_missing_file_and_unknown_scheme(ws: Workspace) -> None:
    ws.write("right.csv", RIGHT)
    with pytest.raises(SourceNotFound, match=r"left\.csv"):
        run(ws, ws.recipe(MATCH))
    ws.write("left.csv", LEFT)
    with pytest.raises(UnsupportedUri, match=r"supported schemes: .*file"):
        run(ws, ws.recipe(MATCH), sources={"l_src": "ftp://host/x.csv"})


def test_unknown_column_in_match_sql_is_invalid(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    with pytest.raises(MatchSqlInvalid, match="nosuch"):
        run(ws, ws.recipe("SELECT l.nosuch FROM l_src l JOIN r_src r ON l.id = r.id"))


def test_forbidden_sql_is_refused_before_anything_runs(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    request = kalla.Recipe.load(ws.recipe(MATCH)).to_job_request()
    bad = request.model_copy(update={"match_sql": "COPY (SELECT 1) TO '/tmp/x'"})

    with pytest.raises(MatchSqlForbidden):
        run_job(bad, ws.root / "out" / "x")


def test_failed_runs_publish_metadata_and_can_be_retried(ws: Workspace) -> None:
    ws.write("left.csv", "id,ref\n1,A\n1,B\n")
    ws.write("right.csv", RIGHT)
    run_id = uuid.uuid4()
    recipe = ws.recipe("SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref")
    with pytest.raises(DuplicatePrimaryKey):
        run(ws, recipe, run_id=run_id)
    run_dir = ws.root / "out" / "runs" / str(run_id)
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["status"] == "failed" and meta["error"]["code"] == "duplicate_primary_key"
    assert sorted(p.name for p in run_dir.iterdir()) == ["metadata.json"]
    ws.write("left.csv", "id,ref\n1,A\n2,B\n")
    result = run(ws, recipe, run_id=run_id)
    assert result.metadata.status == "completed"
    with pytest.raises(EvidenceExists):
        run(ws, recipe, run_id=run_id)
    assert not [p for p in (ws.root / "out" / "runs").iterdir() if p.name.startswith(".")]


def test_metadata_describes_the_run(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    result = run(ws, ws.recipe(MATCH))
    meta = json.loads(Path(result.run_dir, "metadata.json").read_text())
    assert meta["status"] == "completed" and meta["recipe_id"] == "test"
    assert set(meta["durations_s"]) >= {"staging", "matching", "writing_results"}
    assert meta["counts"]["left"] == {
        "records": 4,
        "matched_records": 2,
        "unmatched_records": 2,
        "null_key_records": 0,
    }
    assert meta["matched_count"] == 2 and meta["unmatched_right_count"] == 2
    assert meta["sources"]["left"]["columns"]["amount"] == "decimal128(18, 2)"
    assert meta["kalla_version"] == kalla.__version__


def test_filters_apply_to_file_sources_typed_by_column(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    recipe = ws.recipe(MATCH, left_opts={"filters": [{"column": "amount", "op": "gte", "value": 150}]},
                       right_opts={"filters": [{"column": "currency", "op": "in", "value": ["EUR"]}]})  # fmt: skip
    result = run(ws, recipe)
    assert result.matched_count == 1
    assert result.metadata.counts["left"].records == 2
    assert result.metadata.counts["right"].records == 1


def test_memory_limit_bounds_the_run_and_gives_the_same_answer(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    result = run(ws, ws.recipe(MATCH), memory_limit=64 << 20)
    assert (result.matched_count, result.unmatched_left_count, result.unmatched_right_count) == (
        2,
        2,
        2,
    )


def test_progress_reports_each_stage(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    events: list[kalla.ProgressEvent] = []
    run(ws, ws.recipe(MATCH), progress=events.append)
    stages = [e.stage.value for e in events]
    assert stages[0] == "staging" and "matching" in stages and "writing_results" in stages
    assert {e.source for e in events if e.stage == "staging"} == {"l_src", "r_src"}
    assert [e.matched_count for e in events if e.stage == "matching" and e.progress == 1.0] == [2]


def test_csv_staged_through_parquet_under_a_memory_limit_gives_the_same_answer(
    ws: Workspace,
) -> None:
    rows = 50_000
    ws.write(
        "left.csv",
        "id,ref,amount\n" + "".join(f"{i},R{i},{i}.{i % 100:02d}\n" for i in range(rows)),
    )
    ws.write(
        "right.csv",
        "id,ref,amount\n"
        + "".join(f"{i},R{i},{i}.{(i + i % 3) % 100:02d}\n" for i in range(0, rows, 2)),
    )
    recipe = ws.recipe(
        "SELECT l.ref FROM l_src l JOIN r_src r ON l.ref = r.ref AND tolerance_match(l.amount, r.amount, 0.01)"
    )

    request = kalla.Recipe.load(recipe).to_job_request()
    limited = run_job(request, ws.root / "limited", memory_limit=128 << 20, stage_csv=True)
    free = run(ws, recipe)
    assert not (ws.root / "limited" / "_scratch").exists()
    assert limited.metadata.sources["left"].columns["amount"] == "decimal128(18, 2)"
    assert (limited.matched_count, limited.unmatched_left_count, limited.unmatched_right_count) == (
        free.matched_count,
        free.unmatched_left_count,
        free.unmatched_right_count,
    )

    def cents(i: int, frac: int) -> int:
        return i * 100 + frac

    expected = sum(
        1 for i in range(0, rows, 2) if abs(cents(i, i % 100) - cents(i, (i + i % 3) % 100)) <= 1
    )
    assert free.matched_count == expected


def test_mixed_case_aliases_resolve_like_sql_names(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    recipe = ws.recipe(
        MATCH.replace("l_src", "Ledger").replace("r_src", "Bank"),
        left_alias="Ledger",
        right_alias="Bank",
    )
    assert run(ws, recipe).matched_count == 2


def test_a_value_that_does_not_fit_its_declared_type_is_named(ws: Workspace) -> None:
    ws.write("left.csv", "id,ref,amount\n1,A,1.23\n2,B,1.234\n")
    ws.write("right.csv", RIGHT)
    recipe = ws.recipe(MATCH, left_opts={"schema": {"amount": "decimal(18,2)"}})
    with pytest.raises(SchemaMismatch, match=r"'amount'.*'1\.234'.*fractional digits"):
        run(ws, recipe)


def test_reasons_can_be_left_out_for_speed(ws: Workspace) -> None:
    ws.write("left.csv", LEFT)
    ws.write("right.csv", RIGHT)
    plain = run(ws, ws.recipe(MATCH), explain_unmatched=False)
    assert pq.read_schema(plain.output_paths.unmatched_left).names == [
        "id",
        "ref",
        "amount",
        "currency",
    ]
    explained = run(ws, ws.recipe(MATCH))
    assert (plain.unmatched_left_count, plain.unmatched_right_count) == (
        explained.unmatched_left_count,
        explained.unmatched_right_count,
    )


@pytest.mark.parametrize(
    "uri", ["bad\x00name.csv", "bad\udc1dname.csv", "~no-such-user-kalla/x.csv", "~u"]
)
def test_paths_that_cannot_name_a_file_are_a_typed_error(ws: Workspace, uri: str) -> None:
    from kalla.errors import SourceUriInvalid

    with pytest.raises(SourceUriInvalid):
        default_registry().for_uri(uri).check(uri)


class _WaitsForCancel(Connector):
    """Stands for a long database read: returns only once the run tells it to stop."""

    schemes = ("slow",)
    saw_cancel: bool | None = None

    def open(self, source: JobSource, ctx: ConnectorContext) -> TableSource:
        type(self).saw_cancel = ctx.cancel.wait(timeout=60)
        raise Cancelled("stopped")


class _Fails(Connector):
    schemes = ("broken",)

    def open(self, source: JobSource, ctx: ConnectorContext) -> TableSource:
        raise SourceNotFound(f"source {source.alias!r}: no such table")


def test_sources_are_opened_together_and_a_failure_stops_the_other(ws: Workspace) -> None:
    """Both sides are read at once; when one fails the other is told to stop, and the
    error is the real failure, not the other side's cancellation."""
    registry = ConnectorRegistry()
    registry.load_entry_points()
    registry.register(_WaitsForCancel)
    registry.register(_Fails)
    for slow_side, broken_side in (("l_src", "r_src"), ("r_src", "l_src")):
        _WaitsForCancel.saw_cancel = None
        request = kalla.Recipe.load(ws.recipe(MATCH)).to_job_request(
            source_uris={slow_side: "slow://db/table", broken_side: "broken://db/table"}
        )
        with pytest.raises(SourceNotFound, match=broken_side):
            run_job(request, ws.root / "out" / slow_side, registry=registry)
        assert _WaitsForCancel.saw_cancel is True
