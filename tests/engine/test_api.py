"""The library's Engine API: registration, read-only SQL, streaming, joins and orphans."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import kalla
from kalla import Engine, Side
from kalla.errors import (
    FilterInvalid,
    JobInvalid,
    MatchSqlForbidden,
    MatchSqlInvalid,
    MissingDependency,
    SchemaMismatch,
    SourceNotFound,
    TableNameInvalid,
    UnsupportedUri,
)


@pytest.fixture
def engine() -> Iterator[Engine]:
    with Engine(target_partitions=2) as e:
        yield e


class ArrowStreamOnly:
    """A third-party frame that only speaks the Arrow C stream interface."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self._table.__arrow_c_stream__(requested_schema)


def test_register_uri_reads_csv_exactly_and_applies_filters(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    path.write_text("id,amount,booked\nA,10.50,2026-01-02\nB,7.25,2025-12-31\nC,,2026-02-01\n")
    schema = engine.register_uri(
        "inv", str(path), filters=[{"column": "booked", "op": "gte", "value": "2026-01-01"}]
    )
    assert schema.field("amount").type == pa.decimal128(18, 2)
    assert schema.field("booked").type == pa.date32()
    rows = engine.sql("SELECT id, amount FROM inv ORDER BY id").to_pylist()
    assert rows == [{"id": "A", "amount": D("10.50")}, {"id": "C", "amount": None}]
    assert engine.tables() == ["inv"]


def test_register_uri_errors_are_typed(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id\n1\n")
    with pytest.raises(SourceNotFound):
        engine.register_uri("a", str(tmp_path / "missing.csv"))
    with pytest.raises(UnsupportedUri, match="supported schemes"):
        engine.register_uri("a", "ftp://example.com/a.csv")
    with pytest.raises(FilterInvalid, match="nope"):
        engine.register_uri("a", str(path), filters=[{"column": "nope", "op": "eq", "value": 1}])
    with pytest.raises(JobInvalid, match="between"):
        engine.register_uri("a", str(path), filters=[{"column": "id", "op": "between", "value": 1}])
    with pytest.raises(SchemaMismatch, match="amount"):
        engine.register_uri("a", str(path), schema={"amount": "decimal(18,2)"})
    for bad in ("1st", "a-b", "__kalla_x", "x; DROP"):
        with pytest.raises(TableNameInvalid):
            engine.register_uri(bad, str(path))


def test_register_table_accepts_arrow_datasets_and_arrow_streams(
    engine: Engine, tmp_path: Path
) -> None:
    table = pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3]})
    pq.write_table(table, tmp_path / "t.parquet")
    engine.register_table("t_table", table)
    engine.register_table("t_batch", table.to_batches()[0])
    engine.register_table(
        "t_reader", pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    )
    engine.register_table("t_dataset", pads.dataset(tmp_path / "t.parquet"))
    engine.register_table("t_stream", ArrowStreamOnly(table))
    for name in engine.tables():
        assert engine.sql(f"SELECT sum(n) AS s FROM {name}").to_pylist() == [{"s": 6}], name
    # Registering a name again replaces the table.
    engine.register_table("t_table", pa.table({"n": [10]}))
    assert engine.sql("SELECT sum(n) AS s FROM t_table").to_pylist() == [{"s": 10}]
    with pytest.raises(TypeError, match="__arrow_c_stream__"):
        engine.register_table("x", [1, 2, 3])


def test_sql_is_read_only_and_errors_name_the_query(engine: Engine, tmp_path: Path) -> None:
    engine.register_table("t", pa.table({"a": [1]}))
    for statement in (
        "DROP TABLE t",
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO t VALUES (2)",
        f"COPY t TO '{tmp_path}/out.csv'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT 1; SELECT 2",
    ):
        with pytest.raises(MatchSqlForbidden, match=r"^query "):
            engine.sql(statement)
    with pytest.raises(MatchSqlInvalid, match="query does not plan"):
        engine.sql("SELECT nope FROM t")
    with pytest.raises(MatchSqlInvalid, match="query does not parse"):
        engine.sql("SELEC 1")
    assert not (tmp_path / "out.csv").exists()


def test_udfs_are_exact_through_the_public_sql(engine: Engine) -> None:
    engine.register_table(
        "t", pa.table({"a": [100.0, 100.0], "b": [100.01, 100.011], "s": ["inv-1/a", None]})
    )
    rows = engine.sql(
        "SELECT tolerance_match(a, b, 0.01) AS ok, normalize_ref(s) AS ref FROM t"
    ).to_pylist()
    assert rows == [{"ok": True, "ref": "INV1A"}, {"ok": False, "ref": None}]


def test_sql_stream_yields_batches_lazily(engine: Engine) -> None:
    engine.register_table("t", pa.table({"a": list(range(50_000))}))
    batches = engine.sql_stream("SELECT a FROM t WHERE a % 2 = 0")
    first = next(batches)
    assert isinstance(first, pa.RecordBatch)
    assert first.num_rows + sum(b.num_rows for b in batches) == 25_000
    with pytest.raises(MatchSqlForbidden):
        engine.sql_stream("DELETE FROM t")
    assert list(engine.sql_stream("SELECT a FROM t WHERE a < 0")) == []


def test_execute_join_quotes_names_and_prefixes_shared_columns(engine: Engine) -> None:
    engine.register_table(
        "select",  # a keyword: works because every identifier is quoted (D6)
        pa.table({"id": ["A", "B", "C"], "amount": [D("10.00"), D("5.00"), D("1.00")]}),
    )
    engine.register_table(
        "payments",
        pa.table({"id": ["A", "B", "C"], "amount": [D("10.02"), D("5.03"), None]}),
    )
    joined = engine.execute_join("select", "payments", on=["id"], tolerance={"amount": "0.02"})
    assert joined.column_names == ["select.id", "select.amount", "payments.id", "payments.amount"]
    assert joined.to_pylist() == [
        {
            "select.id": "A",
            "select.amount": D("10.00"),
            "payments.id": "A",
            "payments.amount": D("10.02"),
        }
    ]
    plain = engine.execute_join("select", "payments", on=[("id", "id")])
    assert plain.num_rows == 3
    streamed = list(
        engine.execute_join_stream("select", "payments", on=["id"], tolerance={"amount": 1})
    )
    assert sum(b.num_rows for b in streamed) == 2
    self_join = engine.execute_join("payments", "payments", on=["id"])
    assert self_join.column_names[:2] == ["left.id", "left.amount"]


def test_execute_join_refuses_bad_arguments(engine: Engine) -> None:
    engine.register_table("l", pa.table({"id": [1], "amt": [D("1.00")]}))
    engine.register_table("r", pa.table({"ref": [1], "amt": [D("1.00")]}))
    with pytest.raises(SchemaMismatch, match="'ref'"):
        engine.execute_join("l", "r", on=["ref"])
    with pytest.raises(SchemaMismatch, match="no table 'zz'"):
        engine.execute_join("l", "zz", on=["id"])
    with pytest.raises(JobInvalid, match="at least one"):
        engine.execute_join("l", "r", on=[])
    for bad in ("-1", "abc", float("nan"), True):
        with pytest.raises(JobInvalid, match="tolerance"):
            engine.execute_join("l", "r", on=[("id", "ref")], tolerance={"amt": bad})  # type: ignore[dict-item]
    # A tolerance is a value, never SQL.
    with pytest.raises(JobInvalid):
        engine.execute_join("l", "r", on=[("id", "ref")], tolerance={"amt": "1) OR (1=1"})


def test_find_orphans_is_an_anti_join_on_the_full_key(engine: Engine) -> None:
    engine.register_table(
        "inv", pa.table({"co": ["X", "X", "Y", None], "no": [1, 2, 1, 1], "v": [1, 2, 3, 4]})
    )
    engine.register_table("pay", pa.table({"company": ["X", "Y", "Z"], "no": [1, 2, 1]}))
    keys = [("co", "company"), "no"]
    left = engine.find_orphans(Side.LEFT, "inv", "pay", keys)
    assert sorted(left.column("v").to_pylist()) == [2, 3, 4]  # NULL key: always an orphan
    right = engine.find_orphans(Side.RIGHT, "inv", "pay", keys)
    assert right.column_names == ["company", "no"]
    assert sorted(right.to_pylist(), key=str) == [
        {"company": "Y", "no": 2},
        {"company": "Z", "no": 1},
    ]
    streamed = engine.find_orphans_stream(Side.LEFT, "inv", "pay", keys)
    assert sum(b.num_rows for b in streamed) == 3
    with pytest.raises(TypeError, match="Side"):
        engine.find_orphans("LEFT", "inv", "pay", keys)  # type: ignore[arg-type]
    with pytest.raises(JobInvalid):
        engine.find_orphans(Side.LEFT, "inv", "pay", [])


def test_no_session_is_handed_out() -> None:
    public = {n for n in dir(Engine) if not n.startswith("_")}
    assert not {"context", "context_mut", "ctx", "session"} & public


def test_close_removes_staging_files(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id\n1\n")
    engine = Engine()
    engine.register_uri("a", str(path))
    staging = engine._staging
    assert staging is not None and staging.exists()
    engine.close()
    assert not staging.exists()
    assert engine.tables() == []


def test_pandas_output_names_the_extra_when_missing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed: import fails
    engine.register_table("t", pa.table({"a": [1]}))
    with pytest.raises(MissingDependency, match=r"kalla\[pandas\]") as info:
        engine.to_pandas("SELECT a FROM t")
    assert info.value.details == {"extra": "pandas"}


def test_polars_output_names_the_extra_when_missing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "polars", None)
    engine.register_table("t", pa.table({"a": [1]}))
    with pytest.raises(MissingDependency, match=r"kalla\[polars\]"):
        engine.to_polars("SELECT a FROM t")


def test_pandas_round_trip(engine: Engine) -> None:
    import pandas as pd

    engine.register_table("t", pd.DataFrame({"a": [1, 2]}, index=[10, 20]))
    assert engine.schema("t").names == ["a"]
    assert engine.to_pandas("SELECT sum(a) AS s FROM t")["s"].tolist() == [3]


def test_polars_round_trip(engine: Engine) -> None:
    import polars as pl

    engine.register_table("t", pl.DataFrame({"a": [1, 2]}))
    engine.register_table("lazy", pl.DataFrame({"a": [3]}).lazy())
    assert engine.to_polars("SELECT sum(a) AS s FROM t")["s"].to_list() == [3]
    assert engine.sql("SELECT a FROM lazy").to_pylist() == [{"a": 3}]


def test_importing_kalla_does_not_import_the_engine() -> None:
    import subprocess
    import sys

    code = "import sys, kalla; print('datafusion' in sys.modules); kalla.Engine; print('datafusion' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
    assert "Engine" in dir(kalla)
