"""The PostgreSQL connector against a real server: types, filters, snapshots, errors."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kalla.connectors import ConnectorContext, default_registry
from kalla.connectors._pg_read import TableRead, plan_ranges
from kalla.connectors.postgres import PostgresConnector, parse_pg_uri
from kalla.errors import (
    Cancelled,
    ConnectionFailed,
    FilterInvalid,
    KallaError,
    PermissionDenied,
    SourceNotFound,
    SourceReadFailed,
    SourceUriInvalid,
)
from kalla.job import FilterCondition, JobSource
from tests.connectors.servers import PG_PASSWORD, PgServer, free_ports


def read(
    uri: str,
    tmp_path: Path,
    *,
    filters: list[dict[str, Any]] | None = None,
    schema: Any = None,
    partitions: int | None = None,
    alias: str = "src",
) -> pa.Table:
    source = JobSource(alias=alias, uri=uri, filters=[FilterCondition(**f) for f in filters or []],
                       schema=schema)  # fmt: skip
    options = {"postgres_partitions": partitions} if partitions else {}
    table = PostgresConnector().open(
        source, ConnectorContext(staging_dir=tmp_path / "staging", options=options)
    )
    assert table.format == "parquet" and table.filters_applied
    assert PG_PASSWORD not in table.description
    return pq.read_table(table.paths)


ALL_TYPES = """
CREATE TABLE IF NOT EXISTS all_types (
  id bigint PRIMARY KEY, amount numeric(18,2), free numeric, i2 smallint, i4 integer,
  r real, d double precision, ok boolean, t text, v varchar(20), c char(3), day date,
  ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb, raw bytea, "Mixed Case" text
);
TRUNCATE all_types;
INSERT INTO all_types VALUES
 (1, 12345678901234.56, 0.000000000000000001, 32767, -2147483648, 1.5, 0.1, true, 'café', 'v', 'ab',
  '2024-02-29', '2024-02-29 23:59:59.123456', '2024-02-29 23:59:59.5+02',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b": 2}', '\\x00ff10', 'q'),
 (2, -0.01, 123456789012345678.5, NULL, NULL, NULL, NULL, false, '', NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL);
"""


def test_every_type_maps_exactly(pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path) -> None:
    pg_conn.execute(ALL_TYPES)
    t = read(pg.uri("all_types"), tmp_path).sort_by("id")
    assert dict(zip(t.schema.names, t.schema.types, strict=True)) == {
        "id": pa.int64(), "amount": pa.decimal128(18, 2), "free": pa.decimal128(38, 18),
        "i2": pa.int16(), "i4": pa.int32(), "r": pa.float32(), "d": pa.float64(), "ok": pa.bool_(),
        "t": pa.string(), "v": pa.string(), "c": pa.string(), "day": pa.date32(),
        "ts": pa.timestamp("us"), "tstz": pa.timestamp("us", tz="UTC"), "u": pa.string(),
        "j": pa.string(), "jb": pa.string(), "raw": pa.binary(), "Mixed Case": pa.string(),
    }  # fmt: skip
    first, second, third = t.to_pylist()
    assert first["amount"] == Decimal("12345678901234.56")
    assert first["free"] == Decimal("0.000000000000000001")
    assert second["free"] == Decimal("123456789012345678.5")
    assert (first["i2"], first["i4"], first["r"], first["d"]) == (32767, -2147483648, 1.5, 0.1)
    assert (first["t"], first["c"], first["day"]) == ("café", "ab ", date(2024, 2, 29))
    assert first["ts"] == datetime(2024, 2, 29, 23, 59, 59, 123456)
    assert first["tstz"] == datetime(2024, 2, 29, 21, 59, 59, 500000, tzinfo=UTC)
    assert first["u"] == str(uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
    assert (first["j"], first["jb"], first["raw"]) == ('{"a": [1, 2]}', '{"b": 2}', b"\x00\xff\x10")
    assert second["amount"] == Decimal("-0.01") and second["t"] == ""
    assert all(v is None for k, v in third.items() if k != "id")


def test_declared_decimal_type_wins_for_unconstrained_numeric(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    pg_conn.execute("DROP TABLE IF EXISTS loose; CREATE TABLE loose (id int, amt numeric);"
                    "INSERT INTO loose VALUES (1, 10.5), (2, 3)")  # fmt: skip
    t = read(pg.uri("loose"), tmp_path, schema={"id": None, "amt": "decimal(12,2)"})
    assert t.schema.field("amt").type == pa.decimal128(12, 2)
    assert sorted(t.column("amt").to_pylist()) == [Decimal("3.00"), Decimal("10.50")]
    pg_conn.execute("INSERT INTO loose VALUES (3, 1.005)")
    with pytest.raises(SourceReadFailed, match="amt"):
        read(pg.uri("loose"), tmp_path / "again", schema={"id": None, "amt": "decimal(12,2)"})


def test_numeric_too_wide_for_decimal128_is_an_error(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    pg_conn.execute("DROP TABLE IF EXISTS wide; CREATE TABLE wide (x numeric);"
                    "INSERT INTO wide VALUES (1e30 + 0.000000001)")  # fmt: skip
    with pytest.raises(SourceReadFailed, match="38"):
        read(pg.uri("wide"), tmp_path)


@pytest.fixture
def ledger(pg_conn: psycopg.Connection) -> str:
    pg_conn.execute("""
        DROP TABLE IF EXISTS ledger;
        CREATE TABLE ledger (id int, ref text, amount numeric(12,2), booked date, note text);
        INSERT INTO ledger VALUES
          (1, 'INV-1', 9.00, '2024-01-05', 'a'), (2, 'INV-2', 10.00, '2024-01-31', 'b'),
          (3, 'INV-10', 100.00, '2024-02-01', NULL), (4, 'PAY-1', -5.50, '2023-12-31', 'x'),
          (5, 'INV-3', 20.00, '2024-03-01', 'it''s');
    """)
    return "ledger"


@pytest.mark.parametrize(
    ("flt", "ids"),
    [
        ({"column": "amount", "op": "gt", "value": 9}, [2, 3, 5]),  # as text, '100.00' < '9'
        ({"column": "amount", "op": "gte", "value": "10"}, [2, 3, 5]),
        ({"column": "amount", "op": "lt", "value": Decimal("9.5")}, [1, 4]),
        ({"column": "amount", "op": "lte", "value": 9}, [1, 4]),
        ({"column": "amount", "op": "eq", "value": "100"}, [3]),
        ({"column": "amount", "op": "neq", "value": 100}, [1, 2, 4, 5]),
        ({"column": "booked", "op": "between", "value": ["2024-01-01", "2024-01-31"]}, [1, 2]),
        ({"column": "booked", "op": "gte", "value": "2024-02-01"}, [3, 5]),
        ({"column": "id", "op": "in", "value": [1, 3, 99]}, [1, 3]),
        ({"column": "ref", "op": "in", "value": ["INV-1", "PAY-1"]}, [1, 4]),
        ({"column": "ref", "op": "like", "value": "INV-1%"}, [1, 3]),
        ({"column": "note", "op": "eq", "value": "it's"}, [5]),
        ({"column": "note", "op": "eq", "value": "x' OR '1'='1"}, []),  # data, never SQL
    ],
)
def test_filters_are_pushed_down_and_typed(
    pg: PgServer, ledger: str, tmp_path: Path, flt: dict[str, Any], ids: list[int]
) -> None:
    t = read(pg.uri(ledger), tmp_path, filters=[flt])
    assert sorted(t.column("id").to_pylist()) == ids


def test_filters_combine_with_and(pg: PgServer, ledger: str, tmp_path: Path) -> None:
    filters = [
        {"column": "ref", "op": "like", "value": "INV-%"},
        {"column": "amount", "op": "lt", "value": 20},
    ]
    assert sorted(read(pg.uri(ledger), tmp_path, filters=filters).column("id").to_pylist()) == [
        1,
        2,
    ]


@pytest.mark.parametrize(
    ("flt", "match"),
    [
        ({"column": "nope", "op": "eq", "value": 1}, "unknown column 'nope'.*columns are: id, ref"),
        ({"column": "amount", "op": "gt", "value": "lots"}, "does not fit"),
        ({"column": "booked", "op": "between", "value": ["2024-01-01", "someday"]}, "does not fit"),
        ({"column": "amount", "op": "like", "value": "1%"}, "'like' needs a text column"),
        ({"column": "id", "op": "in", "value": [1, "two"]}, "does not fit"),
    ],
)
def test_bad_filters_are_typed_errors(
    pg: PgServer, ledger: str, tmp_path: Path, flt: dict[str, Any], match: str
) -> None:
    with pytest.raises(FilterInvalid, match=match) as info:
        read(pg.uri(ledger), tmp_path, filters=[flt])
    assert PG_PASSWORD not in str(info.value)


def test_partitions_cover_every_row_once(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    pg_conn.execute("DROP TABLE IF EXISTS many; CREATE TABLE many AS "
                    "SELECT g AS id, (g % 1000)::numeric(10,2) AS amt FROM generate_series(1, 60000) g")  # fmt: skip
    one = read(pg.uri("many"), tmp_path / "one", partitions=1)
    four = read(pg.uri("many"), tmp_path / "four", partitions=4,
                filters=[{"column": "id", "op": "gt", "value": 10}])  # fmt: skip
    assert one.num_rows == 60000
    assert sorted(four.column("id").to_pylist()) == list(range(11, 60001))
    assert len(list((tmp_path / "four" / "staging").glob("*.parquet"))) == 4


def test_plan_ranges_split_pages_without_gaps() -> None:
    assert plan_ranges(10, 3) == [(0, 3), (3, 6), (6, None)]
    assert plan_ranges(2, 8) == [(0, 1), (1, None)]
    assert plan_ranges(0, 4) == [(0, None)]


def test_partitions_share_one_snapshot(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes committed after the snapshot is exported are invisible to every partition."""
    pg_conn.execute("""
        DROP TABLE IF EXISTS accounts;
        CREATE TABLE accounts (id int PRIMARY KEY, balance bigint) WITH (fillfactor = 100);
        INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 20000) g;
    """)
    pg_conn.execute("VACUUM ANALYZE accounts")
    original = TableRead._parallel

    def write_between_export_and_read(self: TableRead, *args: Any) -> list[str]:
        with psycopg.connect(pg.dsn(), autocommit=True) as other:
            # Move money from the first page's rows to the last page's; new row versions land
            # at the end of the heap, in another partition. Then add brand-new rows.
            other.execute("UPDATE accounts SET balance = balance - 50 WHERE id <= 100")
            other.execute("UPDATE accounts SET balance = balance + 50 WHERE id > 19900")
            other.execute("INSERT INTO accounts SELECT g, 1 FROM generate_series(20001, 21000) g")
        return original(self, *args)

    monkeypatch.setattr(TableRead, "_parallel", write_between_export_and_read)
    t = read(pg.uri("accounts"), tmp_path, partitions=4)
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 20000
    assert sum(t.column("balance").to_pylist()) == 2_000_000
    # Outside the snapshot, the writes are there.
    assert pg_conn.execute("SELECT count(*), sum(balance) FROM accounts").fetchone() == (
        21000,
        2_001_000,
    )


def test_query_parameters_reach_the_connection(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    pg_conn.execute(
        "CREATE OR REPLACE VIEW whoami AS SELECT current_setting('application_name') AS app"
    )
    t = read(pg.uri("whoami", application_name="kalla-test-app", sslmode="disable"), tmp_path)
    assert t.column("app").to_pylist() == ["kalla-test-app"]
    with pytest.raises(ConnectionFailed, match="SSL") as info:
        read(pg.uri("whoami", sslmode="require"), tmp_path / "ssl")
    assert PG_PASSWORD not in str(info.value)
    with pytest.raises(SourceUriInvalid, match="bogus"):
        read(pg.uri("whoami", bogus="1"), tmp_path / "bogus")


def test_schema_parameter_and_case_folding(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    pg_conn.execute('CREATE SCHEMA IF NOT EXISTS finance; DROP TABLE IF EXISTS finance."Payments";'
                    'CREATE TABLE finance."Payments" (id int); INSERT INTO finance."Payments" VALUES (7);'
                    "DROP TABLE IF EXISTS finance.refunds; CREATE TABLE finance.refunds (id int)")  # fmt: skip
    assert read(pg.uri("Payments", schema="finance"), tmp_path).column("id").to_pylist() == [7]
    assert (
        read(pg.uri("REFUNDS", schema="finance"), tmp_path / "r").num_rows == 0
    )  # unquoted folding


def test_errors_name_table_and_host_never_the_password(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    host = f"127.0.0.1:{pg.port}"
    cases: list[tuple[str, type[KallaError], str]] = [
        (pg.uri("no_such_table"), SourceNotFound, "public.no_such_table"),
        (pg.uri("t", database="no_such_db"), SourceNotFound, "no_such_db"),
        (
            pg.uri("t", password="wrong-" + PG_PASSWORD),
            PermissionDenied,
            "password authentication failed",
        ),
        (pg.uri("t").replace(str(pg.port), str(free_ports(1)[0])), ConnectionFailed, "refused"),
    ]
    for uri, kind, text in cases:
        with pytest.raises(kind) as info:
            read(uri, tmp_path)
        message = str(info.value)
        assert text in message and PG_PASSWORD not in message, message
        assert "127.0.0.1:" in message and "table public." in message
        assert info.value.details["alias"] == "src"
    with pytest.raises(SourceNotFound) as info:
        read(pg.uri("no_such_table"), tmp_path)
    assert host in str(info.value)


def test_permission_denied_for_a_role_without_grants(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    pg_conn.execute("""
        DROP TABLE IF EXISTS secret_ledger; CREATE TABLE secret_ledger (id int);
        DO $$ BEGIN CREATE ROLE reader LOGIN PASSWORD 'reader-pw-123';
        EXCEPTION WHEN duplicate_object THEN NULL; END $$;
    """)
    with pytest.raises(PermissionDenied, match="secret_ledger") as info:
        read(pg.uri("secret_ledger", user="reader", password="reader-pw-123"), tmp_path)
    assert "reader-pw-123" not in str(info.value)


def test_uri_parsing() -> None:
    loc = parse_pg_uri(
        "postgres://u:p%40ss@db.example:6543/books?table=inv&schema=acc&sslmode=require"
    )
    assert (loc.schema, loc.table, loc.host, loc.database) == (
        "acc",
        "inv",
        "db.example:6543",
        "books",
    )
    assert "sslmode=require" in loc.conn_uri and "table=" not in loc.conn_uri
    assert "connect_timeout=10" in loc.conn_uri
    assert "p%40ss" not in repr(loc) and "p%40ss" not in loc.redacted
    with pytest.raises(SourceUriInvalid, match=r"\?table=NAME"):
        parse_pg_uri("postgresql://u:secret@h/db")


def test_registry_finds_both_schemes() -> None:
    reg = default_registry()
    assert isinstance(reg.for_uri("postgres://h/db?table=t"), PostgresConnector)
    assert isinstance(reg.for_uri("postgresql://h/db?table=t"), PostgresConnector)


@pytest.mark.parametrize("partitions", [1, 4])
def test_a_cancelled_read_stops_with_cancelled(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path, partitions: int
) -> None:
    """When the run no longer needs the table (the other source failed), the read stops."""
    pg_conn.execute("DROP TABLE IF EXISTS big; CREATE TABLE big AS "
                    "SELECT g AS id, g::numeric(12,2) AS amt FROM generate_series(1, 60000) g")  # fmt: skip
    ctx = ConnectorContext(staging_dir=tmp_path, options={"postgres_partitions": partitions})
    ctx.cancel.set()
    with pytest.raises(Cancelled, match=r"public\.big"):
        PostgresConnector().open(JobSource(alias="src", uri=pg.uri("big")), ctx)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("numeric(10,2)", "NaN"),
        ("numeric", "NaN"),
        ("numeric", "Infinity"),
        ("numeric", "-Infinity"),
    ],
)
def test_a_numeric_without_an_exact_decimal_form_is_an_error(
    pg: PgServer, pg_conn: psycopg.Connection, tmp_path: Path, kind: str, value: str
) -> None:
    pg_conn.execute(f"DROP TABLE IF EXISTS odd; CREATE TABLE odd (id int, amt {kind});"
                    f"INSERT INTO odd VALUES (1, 1.5), (2, '{value}')")  # fmt: skip
    with pytest.raises(SourceReadFailed, match="amt"):
        read(pg.uri("odd"), tmp_path)
