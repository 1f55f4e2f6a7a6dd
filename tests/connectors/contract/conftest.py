"""Every connector behind one interface, so one suite runs the same reconciliations on all.

A :class:`Backend` stores an Arrow table where its connector reads from (a CSV file, a
PostgreSQL table, a Parquet object on S3, a BigQuery table, an Elasticsearch index) and
returns the source URI. Servers are the real stand-ins the connector tests start, one per
pytest worker; each test writes tables under fresh names, so tests never see each other's data.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.connectors.bigquery import emulator as bq_emulator
from tests.connectors.elasticsearch import server as es_server

BACKENDS = ["files", "postgres", "s3", "bigquery", "elasticsearch"]


@dataclass
class Backend:
    name: str
    put: Callable[[str, pa.Table], str]
    missing_uri: str
    #: A secret the backend's URIs or environment carry, asserted absent from every output.
    secret: str | None = None
    #: URI of a source on a server that is not there (for connection errors).
    unreachable_uri: str | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def unique(self, stem: str) -> str:
        return f"{stem}_{uuid.uuid4().hex[:10]}"


def _pg_type(t: pa.DataType) -> str:
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    return {"int64": "bigint", "double": "float8", "bool": "boolean", "string": "text",
            "date32[day]": "date"}[str(t)]  # fmt: skip


def _files(tmp: Path) -> Backend:
    def put(stem: str, table: pa.Table) -> str:
        path = tmp / f"{stem}.csv"
        pacsv.write_csv(table, path)
        return str(path)

    return Backend("files", put, missing_uri=str(tmp / "absent.csv"))


def _postgres(request: pytest.FixtureRequest) -> Backend:
    import psycopg

    from tests.connectors.servers import PG_PASSWORD

    pg = request.getfixturevalue("pg")

    def put(stem: str, table: pa.Table) -> str:
        cols = ", ".join(f'"{f.name}" {_pg_type(f.type)}' for f in table.schema)
        marks = ", ".join(["%s"] * table.num_columns)
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{stem}" ({cols})')
            with conn.cursor() as cur:
                cur.executemany(
                    f'INSERT INTO "{stem}" VALUES ({marks})',
                    [tuple(r.values()) for r in table.to_pylist()],
                )
        return str(pg.uri(stem))

    return Backend(
        "postgres",
        put,
        missing_uri=pg.uri("absent_table"),
        secret=PG_PASSWORD,
        unreachable_uri=f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:1/postgres?table=t",
    )


def _s3(request: pytest.FixtureRequest) -> Backend:
    from tests.connectors.servers import S3_SECRET_KEY

    s3 = request.getfixturevalue("s3_env")

    def put(stem: str, table: pa.Table) -> str:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return str(s3.put(f"contract/{stem}.parquet", buf.getvalue()))

    return Backend(
        "s3", put, missing_uri=f"s3://{s3.bucket}/contract/absent.parquet", secret=S3_SECRET_KEY
    )


def _bigquery(monkeypatch: pytest.MonkeyPatch) -> Backend:
    server = bq_emulator.shared()
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    dataset = f"contract_{uuid.uuid4().hex[:8]}"

    def put(stem: str, table: pa.Table) -> str:
        return bq_emulator.load(server, dataset, stem, table)

    return Backend(
        "bigquery",
        put,
        missing_uri=f"bigquery://{bq_emulator.PROJECT}/{dataset}/absent",
    )


ES_PASSWORD = "es-Secret-5c1e"  # noida-db accepts any credentials; kalla must still hide them


def _elasticsearch() -> Backend:
    server = es_server.shared()

    def put(stem: str, table: pa.Table) -> str:
        es_server.load(server, stem.lower(), table)
        return server.uri(stem.lower(), user="elastic", password=ES_PASSWORD)

    return Backend(
        "elasticsearch",
        put,
        missing_uri=server.uri("absent-index", user="elastic", password=ES_PASSWORD),
        secret=ES_PASSWORD,
        unreachable_uri=f"elasticsearch://elastic:{ES_PASSWORD}@127.0.0.1:1/idx",
    )


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    name = request.param
    monkeypatch.setenv("KALLA_ELASTICSEARCH_TIMEOUT", "5")
    if name == "files":
        yield _files(tmp_path)
    elif name == "postgres":
        yield _postgres(request)
    elif name == "s3":
        yield _s3(request)
    elif name == "bigquery":
        yield _bigquery(monkeypatch)
    else:
        yield _elasticsearch()


def known_gap(
    request: pytest.FixtureRequest,
    backend: Backend,
    reasons: dict[str, str],
    raises: type[BaseException] = AssertionError,
) -> None:
    """Make the running test a strict expected failure on the backends ``reasons`` names, so
    the suite says when a known difference goes away."""
    reason = reasons.get(backend.name)
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True, raises=raises))
