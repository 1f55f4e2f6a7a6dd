"""The BigQuery connector against bqemulator: URIs, exact types, pushdown, errors."""

from __future__ import annotations

import os
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kalla import preview_source
from kalla.connectors import ConnectorContext
from kalla.connectors._bq_types import BqColumn, row_restriction
from kalla.connectors.bigquery import BigQueryConnector, BigQuerySettings, parse_bq_uri
from kalla.errors import (
    Cancelled,
    ConnectionFailed,
    FilterInvalid,
    SchemaMismatch,
    SourceNotFound,
    SourceReadFailed,
    SourceUriInvalid,
)
from kalla.job import FilterCondition, JobSource
from tests.connectors.bigquery.emulator import PROJECT, BqEmulator, load

TYPES = pa.table({
    "id": pa.array([1, 2, 3], pa.int64()),
    "amount": pa.array([Decimal("1.10"), None, Decimal("123456789.123456789")], pa.decimal128(38, 9)),
    "rate": pa.array([0.5, None, 2.25]),
    "ok": pa.array([True, None, False]),
    "name": pa.array(["a", None, "it's"]),
    "day": pa.array([None, 19000, 19001], pa.date32()),
    "at": pa.array([0, None, 1_700_000_000_000_000], pa.timestamp("us", tz="UTC")),
    "local": pa.array([0, 1, None], pa.timestamp("us")),
    "raw": pa.array([b"x", None, b"\x00\xff"]),
})  # fmt: skip


def _open(bq: BqEmulator, uri: str, tmp: Path, filters=(), schema=None, **opts):  # type: ignore[no-untyped-def]
    src = JobSource(alias="src", uri=uri, filters=list(filters), schema=schema)
    ctx = ConnectorContext(staging_dir=tmp, options={"bigquery_settings": bq.settings(), **opts})
    return BigQueryConnector().open(src, ctx)


@pytest.fixture(scope="module")
def types_uri(bq: BqEmulator) -> str:
    return load(bq, f"t_{uuid.uuid4().hex[:8]}", "types", TYPES)


def test_uri_parsing() -> None:
    loc = parse_bq_uri("bigquery://my-project/ledger/invoices_2024?location=EU")
    assert (loc.project, loc.dataset, loc.table, loc.location) == (
        "my-project",
        "ledger",
        "invoices_2024",
        "EU",
    )
    for bad in ["bigquery://p/d", "bigquery://my-project/d/t?x=1", "bigquery://u:pw@my-project/d/t",
                "bigquery://my-project/bad-dataset!/t"]:  # fmt: skip
        with pytest.raises(SourceUriInvalid) as err:
            parse_bq_uri(bad)
        assert "pw" not in str(err.value)


def test_emulator_on_loopback_is_anonymous() -> None:
    assert BigQuerySettings(
        api_endpoint="http://127.0.0.1:9050", storage_endpoint="127.0.0.1:9060"
    ).anonymous
    assert not BigQuerySettings(api_endpoint="https://bigquery.example.com").anonymous
    assert not BigQuerySettings().anonymous
    env = BigQuerySettings.from_env(
        {"KALLA_BIGQUERY_API_ENDPOINT": "http://localhost:1", "KALLA_BIGQUERY_TIMEOUT": "3"}
    )
    assert env.api_endpoint == "http://localhost:1" and env.timeout == 3


def test_every_type_is_exact(bq: BqEmulator, types_uri: str, tmp_path: Path) -> None:
    table = _open(bq, types_uri, tmp_path)
    assert table.format == "parquet" and table.filters_applied
    got = pq.read_table(table.paths).sort_by("id")
    assert got.schema.field("amount").type == pa.decimal128(38, 9)
    assert got.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert got.schema.field("local").type == pa.timestamp("us")
    assert got.schema.field("raw").type == pa.binary()
    assert got.to_pylist() == TYPES.to_pylist()


def test_declared_schema_narrows_exactly(bq: BqEmulator, tmp_path: Path) -> None:
    uri = load(bq, f"t_{uuid.uuid4().hex[:8]}", "money", TYPES.select(["id", "amount"]).slice(0, 2))
    table = _open(bq, uri, tmp_path, schema={"amount": "decimal(12,2)"})
    assert pq.read_table(table.paths).schema.field("amount").type == pa.decimal128(12, 2)
    with pytest.raises(SchemaMismatch):
        _open(bq, uri, tmp_path / "x", schema={"absent": "int"})


def test_filters_become_the_row_restriction(bq: BqEmulator, types_uri: str, tmp_path: Path) -> None:
    f = [FilterCondition(column="amount", op="gte", value="1.1"),
         FilterCondition(column="name", op="in", value=["a", "it's"]),
         FilterCondition(column="at", op="lt", value="2000-01-01T00:00:00Z")]  # fmt: skip
    table = _open(bq, types_uri, tmp_path, f)
    assert table.filters_applied
    assert pq.read_table(table.paths).column("id").to_pylist() == [1]


def test_row_restriction_literals_are_typed() -> None:
    cols = {c.name: c for c in [BqColumn.of("n", "NUMERIC"), BqColumn.of("d", "DATE"), BqColumn.of("s", "STRING"),
                                BqColumn.of("b", "BYTES"), BqColumn.of("i", "INTEGER")]}  # fmt: skip
    r = row_restriction([FilterCondition(column="n", op="between", value=["1.005", 2]),
                         FilterCondition(column="d", op="eq", value="2024-01-05"),
                         FilterCondition(column="s", op="like", value="a'\\%")], cols, alias="a", table="t")  # fmt: skip
    assert r.sql == ("(`n` BETWEEN NUMERIC '1.005' AND NUMERIC '2') AND (`d` = DATE '2024-01-05') "
                     "AND (`s` LIKE 'a\\'\\\\%')")  # fmt: skip
    assert r.complete
    assert not row_restriction(
        [FilterCondition(column="b", op="eq", value="x")], cols, alias="a", table="t"
    ).complete
    for bad in [FilterCondition(column="i", op="eq", value="1.5"), FilterCondition(column="d", op="eq", value="May"),
                FilterCondition(column="i", op="like", value="1%"), FilterCondition(column="zz", op="eq", value=1)]:  # fmt: skip
        with pytest.raises(FilterInvalid):
            row_restriction([bad], cols, alias="a", table="t")


def test_unreachable_endpoint_fails_fast(tmp_path: Path) -> None:
    src = JobSource(alias="src", uri="bigquery://kalla-test/d/t")
    settings = {
        "api_endpoint": "http://127.0.0.1:1",
        "storage_endpoint": "127.0.0.1:1",
        "timeout": 1,
    }
    with pytest.raises(ConnectionFailed, match=r"kalla-test\.d\.t"):
        BigQueryConnector().open(
            src, ConnectorContext(staging_dir=tmp_path, options={"bigquery_settings": settings})
        )


@pytest.mark.skipif(
    not os.environ.get("KALLA_TEST_BIGQUERY_PROJECT"),
    reason="KALLA_TEST_BIGQUERY_PROJECT is not set",
)
def test_real_bigquery_public_table(tmp_path: Path) -> None:
    """Real-services tier: ADC credentials, billing in KALLA_TEST_BIGQUERY_PROJECT, a public table."""
    src = JobSource(alias="src", uri="bigquery://bigquery-public-data/samples/shakespeare",
                    filters=[FilterCondition(column="corpus", op="eq", value="hamlet")])  # fmt: skip
    opts = {"bigquery_settings": {"billing_project": os.environ["KALLA_TEST_BIGQUERY_PROJECT"]}}
    table = BigQueryConnector().open(src, ConnectorContext(staging_dir=tmp_path, options=opts))
    got = pq.read_table(table.paths)
    assert got.num_rows > 0 and set(got.column("corpus").to_pylist()) == {"hamlet"}


# --- preview: one stream, cancelled once the rows arrived -----------------------------------

BIG = 200_000  # the emulator sends 65,536 rows per message: four messages


@pytest.fixture(scope="module")
def big_uri(bq: BqEmulator) -> str:
    """``BIG`` rows whose ``amount`` fits a declared ``decimal(5,2)`` except the last one's,
    in the last message: a read that converts every message fails. ``doc`` is JSON, which
    the row restriction cannot compare (kalla filters it)."""
    from google.cloud import bigquery

    dataset = f"t_{uuid.uuid4().hex[:8]}"
    client = bq.client()
    try:
        client.create_dataset(dataset)
        client.create_table(bigquery.Table(f"{PROJECT}.{dataset}.big", schema=[
            bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("amount", "NUMERIC"),
            bigquery.SchemaField("doc", "JSON")]))  # fmt: skip
        client.query(
            f"INSERT INTO {dataset}.big (id, amount, doc) SELECT x, CASE WHEN x = {BIG} "
            "THEN NUMERIC '100000' ELSE CAST(MOD(x, 1000) AS NUMERIC) / 100 END, "
            "PARSE_JSON(CASE WHEN MOD(x, 2) = 0 THEN '\"even\"' ELSE '\"odd\"' END) "
            f"FROM UNNEST(GENERATE_ARRAY(1, {BIG})) AS x"
        ).result()
    finally:
        client.close()
    return f"bigquery://{PROJECT}/{dataset}/big"


DECLARED = {"amount": "decimal(5,2)"}


def _preview(bq: BqEmulator, uri: str, tmp: Path, limit: int, filters=(), schema=None):  # type: ignore[no-untyped-def]
    src = JobSource(alias="src", uri=uri, filters=list(filters), schema=schema)
    ctx = ConnectorContext(staging_dir=tmp, options={"bigquery_settings": bq.settings()})
    return BigQueryConnector().preview(src, limit, ctx)


def test_preview_stops_after_limit_rows(bq: BqEmulator, big_uri: str, tmp_path: Path) -> None:
    with pytest.raises(SourceReadFailed, match="amount"):
        _open(bq, big_uri, tmp_path / "run", schema=DECLARED)  # the whole table does not fit
    staging = tmp_path / "preview"
    staging.mkdir()
    f = [FilterCondition(column="id", op="gt", value=50)]  # pushed: the row restriction
    got = _preview(bq, big_uri, staging, 5, f, schema=DECLARED)
    assert got.schema == pa.schema(
        [("id", pa.int64()), ("amount", pa.decimal128(5, 2)), ("doc", pa.string())]
    )
    assert got.num_rows == 5
    ids = got.column("id").to_pylist()
    assert all(i > 50 for i in ids)  # rows that do not match never appear
    assert got.column("amount").to_pylist() == [Decimal(i % 1000).scaleb(-2) for i in ids]
    assert list(staging.iterdir()) == []  # nothing staged


def test_preview_applies_filters_bigquery_cannot(
    bq: BqEmulator, big_uri: str, tmp_path: Path
) -> None:
    f = [FilterCondition(column="doc", op="eq", value='"odd"'),  # JSON: applied by kalla
         FilterCondition(column="id", op="gt", value=10)]  # fmt: skip
    # Filtering here converts each message whole, so reading past the first message would
    # reach the row that does not fit: the stream was cancelled once 5 rows passed.
    got = _preview(bq, big_uri, tmp_path, 5, f, schema=DECLARED)
    assert sorted(got.column("id").to_pylist()) == [11, 13, 15, 17, 19]
    assert set(got.column("doc").to_pylist()) == {'"odd"'}


def test_preview_source_on_bigquery(bq_env: BqEmulator, types_uri: str) -> None:
    got = preview_source(
        types_uri, filters=[{"column": "name", "op": "in", "value": ["a", "it's"]}], limit=1
    )
    assert got.schema == TYPES.schema
    assert got.num_rows == 1 and got.to_pylist()[0] in [TYPES.to_pylist()[0], TYPES.to_pylist()[2]]
    with pytest.raises(SourceNotFound, match="absent"):
        preview_source(types_uri.rsplit("/", 1)[0] + "/absent", limit=3)
    with pytest.raises(FilterInvalid):
        preview_source(types_uri, filters=[{"column": "id", "op": "eq", "value": "1.5"}])


def test_preview_unreachable_endpoint_fails_fast(tmp_path: Path) -> None:
    src = JobSource(alias="src", uri="bigquery://kalla-test/d/t")
    settings = {"api_endpoint": "http://127.0.0.1:1", "storage_endpoint": "127.0.0.1:1",
                "timeout": 1}  # fmt: skip
    ctx = ConnectorContext(staging_dir=tmp_path, options={"bigquery_settings": settings})
    with pytest.raises(ConnectionFailed, match=r"kalla-test\.d\.t"):
        BigQueryConnector().preview(src, 5, ctx)


def test_a_cancelled_read_stops_with_cancelled(
    bq: BqEmulator, types_uri: str, tmp_path: Path
) -> None:
    """When the run no longer needs the table (the other source failed), the read stops."""
    src = JobSource(alias="src", uri=types_uri)
    ctx = ConnectorContext(staging_dir=tmp_path, options={"bigquery_settings": bq.settings()})
    ctx.cancel.set()
    with pytest.raises(Cancelled, match="src"):
        BigQueryConnector().open(src, ctx)
