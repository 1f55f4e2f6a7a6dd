"""Scoped preview and the evidence store against real servers (PostgreSQL, SeaweedFS S3)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kalla import Engine, EvidenceStore, RunStatus, Side, preview_source
from kalla.connectors.s3 import S3Settings
from kalla.errors import (
    EvidenceExists,
    FilterInvalid,
    RunNotFound,
    SourceNotFound,
    SourceReadFailed,
)
from tests.connectors.servers import PG_PASSWORD, S3_ACCESS_KEY, S3_SECRET_KEY, PgServer, S3Server


def test_postgres_preview_pushes_filters_and_limit_down(
    pg: PgServer, pg_conn: psycopg.Connection
) -> None:
    pg_conn.execute(
        """
        DROP VIEW IF EXISTS preview_trap; DROP TABLE IF EXISTS preview_src;
        CREATE TABLE preview_src (id int PRIMARY KEY, amount numeric(12,2), free numeric, note text);
        INSERT INTO preview_src
          SELECT g, g * 1.5, CASE WHEN g % 2 = 0 THEN round(g / 8.0, 4) END, 'n' || g FROM generate_series(1, 5000) g;
        -- Any row past the first few blows up: only a pushed-down LIMIT survives this view.
        CREATE VIEW preview_trap AS
          SELECT id, amount, free, note, 1 / (CASE WHEN id > 50 THEN 0 ELSE 1 END) AS trap
          FROM preview_src;
        """
    )
    table = preview_source(
        pg.uri("preview_trap"), filters=[{"column": "id", "op": "gte", "value": 3}], limit=4
    )
    assert table.column("id").to_pylist() == [3, 4, 5, 6]
    assert table.schema.field("amount").type == pa.decimal128(12, 2)
    # Unconstrained numeric: typed exactly from the previewed values (here 0.25 and 0.5…).
    assert table.schema.field("free").type == pa.decimal128(38, 4)
    assert table.column("free").to_pylist() == [None, Decimal("0.5000"), None, Decimal("0.7500")]
    # The whole view is unreadable, which proves the preview read only what it showed.
    with Engine() as engine, pytest.raises(SourceReadFailed):
        engine.register_uri("trap", pg.uri("preview_trap"))


def test_postgres_preview_errors_are_typed_and_secret_free(
    pg: PgServer, pg_conn: psycopg.Connection
) -> None:
    pg_conn.execute("CREATE TABLE IF NOT EXISTS preview_small (id int, day date)")
    with pytest.raises(FilterInvalid, match="nope") as info:
        preview_source(
            pg.uri("preview_small"), filters=[{"column": "nope", "op": "eq", "value": 1}]
        )
    assert PG_PASSWORD not in str(info.value)
    with pytest.raises(FilterInvalid):
        preview_source(
            pg.uri("preview_small"), filters=[{"column": "day", "op": "eq", "value": "not-a-date"}]
        )
    with pytest.raises(SourceNotFound) as missing:
        preview_source(pg.uri("no_such_table"))
    assert PG_PASSWORD not in str(missing.value)
    empty = preview_source(pg.uri("preview_small"))
    assert empty.num_rows == 0 and empty.schema.names == ["id", "day"]


def test_s3_preview_of_csv_and_parquet(s3_env: S3Server) -> None:
    s3_env.put("pv/pay.csv", b"id,amount\nP1,10.00\nP2,20.00\nP3,30.00\n")
    buf = BytesIO()
    pq.write_table(pa.table({"k": list(range(1000))}), buf, row_group_size=100)
    s3_env.put("pv/k.parquet", buf.getvalue())
    csv = preview_source(
        "s3://kalla-test/pv/pay.csv",
        filters=[{"column": "id", "op": "neq", "value": "P1"}],
        limit=1,
    )
    assert csv.column("id").to_pylist() == ["P2"]
    parquet = preview_source(
        "s3://kalla-test/pv/k.parquet", filters=[{"column": "k", "op": "gte", "value": 990}]
    )
    assert parquet.column("k").to_pylist() == list(range(990, 1000))
    with pytest.raises(SourceNotFound):
        preview_source("s3://kalla-test/pv/missing.csv")


def test_evidence_store_on_s3(s3: S3Server, tmp_path: Path) -> None:
    settings = S3Settings(access_key_id=S3_ACCESS_KEY, secret_access_key=S3_SECRET_KEY,
                          endpoint_url=s3.endpoint, allow_http=True)  # fmt: skip
    root = f"s3://kalla-test/ev-{uuid.uuid4().hex[:8]}"
    store = EvidenceStore(root, s3_settings=settings)
    assert store.list_runs() == [] and store.latest_run() is None
    with store.init_run(match_sql="SELECT 1") as run:
        run.write_matched(pa.table({"pair": [1, 2]}))
        run.write_unmatched(Side.LEFT, pa.table({"id": ["L9"]}))
        run.write_unmatched(Side.RIGHT, pa.table({"id": ["R9"]}))
        meta = run.publish()
    assert meta.status is RunStatus.COMPLETED and meta.matched_count == 2
    again = EvidenceStore(root, s3_settings=settings)
    assert again.list_runs() == [meta] and again.latest_run() == meta
    assert again.metadata(meta.run_id) == meta
    assert again.read_matched(meta.run_id).column("pair").to_pylist() == [1, 2]
    assert again.read_unmatched(meta.run_id, Side.RIGHT).to_pylist() == [{"id": "R9"}]
    assert again.run_path(meta.run_id) == f"{root}/runs/{meta.run_id}"
    with pytest.raises(EvidenceExists):
        again.init_run(meta.run_id)
    with pytest.raises(RunNotFound):
        again.metadata(uuid.uuid4())
    # Settings never print their secrets.
    assert S3_SECRET_KEY not in repr(store) + repr(settings)


def test_evidence_store_on_s3_reads_folders_of_part_files(s3: S3Server, tmp_path: Path) -> None:
    from kalla.connectors.s3 import upload_run
    from tests.test_evidence_store import as_part_files

    settings = S3Settings(access_key_id=S3_ACCESS_KEY, secret_access_key=S3_SECRET_KEY,
                          endpoint_url=s3.endpoint, allow_http=True)  # fmt: skip
    local = EvidenceStore(tmp_path / "local")
    with local.init_run() as run:
        run.write_matched(pa.table({"pair": [1, 2, 3]}))
        run.write_unmatched(Side.LEFT, pa.table({"id": ["L9"]}))
        run.write_unmatched(Side.RIGHT, pa.table({"id": pa.array([], pa.string())}))
        meta = run.publish()
    folder = Path(local.run_path(meta.run_id))
    as_part_files(folder / "matched.parquet", [1, 0, 2])
    as_part_files(folder / "unmatched_right.parquet", [0])
    root = f"s3://kalla-test/ev-{uuid.uuid4().hex[:8]}"
    urls = upload_run(folder, f"{root}/runs/{meta.run_id}/", settings)
    assert urls[-1].endswith("/metadata.json")
    assert f"{root}/runs/{meta.run_id}/matched.parquet/part-00002.parquet" in urls
    store = EvidenceStore(root, s3_settings=settings)
    assert store.list_runs() == [meta]
    assert store.read_matched(meta.run_id).column("pair").to_pylist() == [1, 2, 3]
    assert store.read_matched(meta.run_id, columns=["pair"]).num_rows == 3
    assert store.read_unmatched(meta.run_id, Side.LEFT).to_pylist() == [{"id": "L9"}]
    empty = store.read_unmatched(meta.run_id, Side.RIGHT)
    assert empty.num_rows == 0 and empty.schema.names == ["id"]
    assert store.read_suggested(meta.run_id) is None  # neither an object nor a folder
