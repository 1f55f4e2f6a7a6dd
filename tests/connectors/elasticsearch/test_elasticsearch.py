"""The Elasticsearch connector against noida-db: URIs, mapping types, PIT slices, pushdown, errors."""

from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kalla import preview_source
from kalla.connectors import ConnectorContext
from kalla.connectors.elasticsearch import ElasticsearchConnector, parse_es_uri
from kalla.errors import (
    Cancelled,
    FilterInvalid,
    SourceNotFound,
    SourceReadFailed,
    SourceUriInvalid,
)
from kalla.job import FilterCondition, JobSource
from tests.connectors.elasticsearch.server import EsServer

SECRET = "es-Api-Key-Planted-77"
N = 2345  # several pages per slice at page size 500


@pytest.fixture(scope="module")
def index(es: EsServer) -> str:
    from elasticsearch import helpers

    name = f"ledger-{uuid.uuid4().hex[:8]}"
    client = es.client()
    client.indices.create(index=name, mappings={"properties": {
        "ref": {"type": "keyword"}, "note": {"type": "text"}, "qty": {"type": "integer"},
        "amount": {"type": "scaled_float", "scaling_factor": 100}, "rate": {"type": "double"},
        "booked": {"type": "date"}, "paid": {"type": "boolean"}, "big": {"type": "unsigned_long"},
        "customer": {"properties": {"name": {"type": "keyword"}, "address": {"properties": {"city": {"type": "keyword"}}}}},
    }})  # fmt: skip
    docs = [{"_index": name, "_id": f"d{i}", "_source": {
        "ref": f"R-{i:05d}", "note": "hello world", "qty": i % 10, "amount": round(i * 1.01, 2),
        "rate": i / 4, "booked": f"2024-0{1 + i % 3}-{1 + i % 28:02d}", "paid": i % 2 == 0,
        "big": 2**63 + i, "customer": {"name": f"c{i % 7}", "address": {"city": "Oslo"}}}}
        for i in range(N)]  # fmt: skip
    docs.append(
        {"_index": name, "_id": "sparse", "_source": {"ref": "R-sparse", "customer.name": "dotted"}}
    )
    helpers.bulk(client, docs, refresh="wait_for")
    client.close()
    return name


def _open(es: EsServer, uri: str, tmp: Path, filters=(), **opts):  # type: ignore[no-untyped-def]
    src = JobSource(alias="src", uri=uri, filters=list(filters))
    return ElasticsearchConnector().open(src, ConnectorContext(staging_dir=tmp, options=opts))


def test_uri_parsing() -> None:
    loc = parse_es_uri(
        "elasticsearch+https://u:p%40ss@es.internal:9243/ledger-*?query="
        + quote('{"term":{"a":"b"}}')
    )
    assert (loc.url, loc.index, loc.username, loc.password) == (
        "https://es.internal:9243",
        "ledger-*",
        "u",
        "p@ss",
    )
    assert loc.query == {"term": {"a": "b"}}
    assert "p@ss" not in repr(loc) and "p%40ss" not in loc.redacted
    for bad in ["elasticsearch://h:9200/", "elasticsearch://u:pw@h:9200/i?query=nope", "elasticsearch://h/i?size=5",
                "elasticsearch://h/i?query=%5B1%5D"]:  # fmt: skip
        with pytest.raises(SourceUriInvalid) as err:
            parse_es_uri(bad)
        assert "pw" not in str(err.value)


def test_every_document_in_parallel_slices(es: EsServer, index: str, tmp_path: Path) -> None:
    table = _open(es, es.uri(index), tmp_path, elasticsearch_slices=3, elasticsearch_page_size=500)
    assert len(table.paths) == 3 and table.filters_applied
    got = pq.read_table(table.paths)
    assert got.num_rows == N + 1
    assert len(set(got.column("_id").to_pylist())) == N + 1  # no duplicates across slices/pages
    types = {f.name: f.type for f in got.schema}
    assert types == {
        "_id": pa.string(), "amount": pa.decimal128(38, 2), "big": pa.decimal128(20, 0),
        "booked": pa.timestamp("us", tz="UTC"), "customer.address.city": pa.string(),
        "customer.name": pa.string(), "note": pa.string(), "paid": pa.bool_(), "qty": pa.int64(),
        "rate": pa.float64(), "ref": pa.string(),
    }  # fmt: skip
    rows = {r["_id"]: r for r in got.to_pylist()}
    assert rows["d3"]["amount"] == Decimal("3.03") and rows["d3"]["big"] == Decimal(2**63 + 3)
    assert rows["d3"]["customer.address.city"] == "Oslo"
    assert rows["sparse"]["customer.name"] == "dotted" and rows["sparse"]["qty"] is None


def test_exact_filters_are_pushed_down(es: EsServer, index: str, tmp_path: Path) -> None:
    f = [FilterCondition(column="qty", op="between", value=[2, 3]),
         FilterCondition(column="ref", op="like", value="R-000_2"),
         FilterCondition(column="paid", op="eq", value="true"),
         FilterCondition(column="booked", op="gte", value="2024-01-01")]  # fmt: skip
    table = _open(es, es.uri(index), tmp_path, f)
    assert table.filters_applied
    got = pq.read_table(table.paths).column("_id").to_pylist()
    assert sorted(got) == sorted(f"d{i}" for i in range(2, 100, 10))


def test_inexact_filters_are_left_to_the_engine(es: EsServer, index: str, tmp_path: Path) -> None:
    table = _open(
        es, es.uri(index), tmp_path, [FilterCondition(column="amount", op="gt", value="10")]
    )
    assert not table.filters_applied  # scaled_float: the engine compares the exact decimals


def test_uri_query_selects_documents(es: EsServer, index: str, tmp_path: Path) -> None:
    q = quote(json.dumps({"term": {"customer.name": "c3"}}))
    got = pq.read_table(_open(es, es.uri(index, query=q), tmp_path).paths)
    assert set(got.column("customer.name").to_pylist()) == {"c3"} and got.num_rows == N // 7


def test_errors_name_the_index_never_the_key(
    es: EsServer, index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KALLA_ELASTICSEARCH_API_KEY", SECRET)
    with pytest.raises(SourceNotFound) as err:
        _open(es, es.uri("absent"), tmp_path)
    assert "absent" in str(err.value) and SECRET not in str(err.value)
    with pytest.raises(FilterInvalid) as err2:
        _open(es, es.uri(index), tmp_path, [FilterCondition(column="qty", op="eq", value="many")])
    assert SECRET not in str(err2.value)
    with pytest.raises(FilterInvalid):
        _open(es, es.uri(index), tmp_path, [FilterCondition(column="qty", op="like", value="1%")])


@pytest.mark.skipif(not os.environ.get("KALLA_TEST_ES_URL"), reason="KALLA_TEST_ES_URL is not set")
def test_real_elasticsearch(tmp_path: Path) -> None:
    """Real-services tier: KALLA_TEST_ES_URL is an elasticsearch[+https]://…/INDEX URI of a
    non-empty index (credentials in it or in KALLA_ELASTICSEARCH_API_KEY)."""
    table = _open(None, os.environ["KALLA_TEST_ES_URL"], tmp_path)  # type: ignore[arg-type]
    got = pq.read_table(table.paths)
    assert got.num_rows > 0 and got.schema.names[0] == "_id"


# --- preview: one bounded search, never the whole index ------------------------------------

TRAP_DOCS = 40


@pytest.fixture(scope="module")
def trap(es: EsServer) -> str:
    """``TRAP_DOCS`` good documents, then one whose ``qty`` holds two values: converting it
    fails (an integer column holds one value), and every fetched hit is converted, so a
    preview that succeeds never fetched it (its request size was bounded)."""
    from elasticsearch import helpers

    name = f"trap-{uuid.uuid4().hex[:8]}"
    client = es.client()
    client.indices.create(index=name, mappings={"properties": {
        "ref": {"type": "keyword"}, "note": {"type": "text"}, "qty": {"type": "integer"},
        "amount": {"type": "scaled_float", "scaling_factor": 100}}})  # fmt: skip
    docs = [{"_index": name, "_id": f"d{i}", "_source": {
        "ref": f"R{i}", "note": f"n{i % 2}", "qty": i, "amount": i * 1.25}}
        for i in range(TRAP_DOCS)]  # fmt: skip
    docs.append({"_index": name, "_id": "bad", "_source": {"ref": "R-bad", "note": "n1",
                                                           "qty": [1, 2], "amount": 999}})  # fmt: skip
    helpers.bulk(client, docs, refresh="wait_for")
    client.close()
    return name


def _preview(uri: str, tmp: Path, limit: int, filters=(), schema=None, **opts):  # type: ignore[no-untyped-def]
    src = JobSource(alias="src", uri=uri, filters=list(filters), schema=schema)
    ctx = ConnectorContext(staging_dir=tmp, options=opts)
    return ElasticsearchConnector().preview(src, limit, ctx)


def test_preview_reads_only_the_rows_it_shows(es: EsServer, trap: str, tmp_path: Path) -> None:
    with pytest.raises(SourceReadFailed, match="bad"):
        _open(es, es.uri(trap), tmp_path / "run")  # reading everything reaches the trap
    staging = tmp_path / "preview"
    staging.mkdir()
    got = _preview(es.uri(trap), staging, 5)
    assert got.column("_id").to_pylist() == [f"d{i}" for i in range(5)]
    assert {f.name: f.type for f in got.schema} == {
        "_id": pa.string(), "amount": pa.decimal128(38, 2), "note": pa.string(),
        "qty": pa.int64(), "ref": pa.string(),
    }  # fmt: skip
    assert got.schema.names[0] == "_id" and got.column("amount")[3].as_py() == Decimal("3.75")
    assert list(staging.iterdir()) == []  # nothing staged
    # Pushed-down filters: rows that do not match never come back, and the limit still holds.
    got = _preview(es.uri(trap), tmp_path, 3, [FilterCondition(column="qty", op="gte", value=30)])
    assert got.column("_id").to_pylist() == ["d30", "d31", "d32"]


def test_preview_applies_filters_it_cannot_push(es: EsServer, trap: str, tmp_path: Path) -> None:
    # scaled_float and text filters stay with kalla: pages of 4 are scanned until 3 rows
    # pass (documents 17, 19, 21, in the sixth page), long before the trap document.
    f = [FilterCondition(column="amount", op="gt", value="20"),
         FilterCondition(column="note", op="eq", value="n1")]  # fmt: skip
    got = _preview(es.uri(trap), tmp_path, 3, f, elasticsearch_page_size=4)
    assert got.column("_id").to_pylist() == ["d17", "d19", "d21"]
    assert got.column("amount").to_pylist() == [
        Decimal("21.25"),
        Decimal("23.75"),
        Decimal("26.25"),
    ]
    # A preview asking for more matching rows than there are good ones does reach the trap,
    # exactly as a run would: the scan is the run's read, stopped early.
    with pytest.raises(SourceReadFailed, match="bad"):
        _preview(es.uri(trap), tmp_path, 50, f, elasticsearch_page_size=4)


def test_preview_source_on_elasticsearch(
    es: EsServer, trap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = quote(json.dumps({"range": {"qty": {"lt": 10}}}))
    got = preview_source(
        es.uri(trap, query=q),
        filters=[{"column": "qty", "op": "in", "value": [3, 4, 12]}],
        schema={"amount": "decimal(10,2)"},
        limit=1,
    )
    assert got.to_pylist() == [
        {"_id": "d3", "amount": Decimal("3.75"), "note": "n1", "qty": 3, "ref": "R3"}
    ]
    assert got.schema.field("amount").type == pa.decimal128(10, 2)
    monkeypatch.setenv("KALLA_ELASTICSEARCH_API_KEY", SECRET)
    with pytest.raises(SourceNotFound) as err:
        preview_source(es.uri("absent"), limit=3)
    assert SECRET not in str(err.value)
    with pytest.raises(FilterInvalid) as err2:
        preview_source(es.uri(trap), filters=[{"column": "qty", "op": "eq", "value": "x"}])
    assert SECRET not in str(err2.value)


def test_a_cancelled_read_stops_with_cancelled(es: EsServer, index: str, tmp_path: Path) -> None:
    """When the run no longer needs the index (the other source failed), the read stops."""
    src = JobSource(alias="src", uri=es.uri(index))
    ctx = ConnectorContext(staging_dir=tmp_path)
    ctx.cancel.set()
    with pytest.raises(Cancelled, match="src"):
        ElasticsearchConnector().open(src, ctx)
