"""Ground truth: the same reconciliation read from local files, PostgreSQL and S3 gives one answer."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from kalla.engine import run_job
from kalla.job import FilterCondition, JobRequest, JobSource
from tests.connectors.servers import PG_PASSWORD, S3_SECRET_KEY, PgServer, S3Server

MATCH = (
    "SELECT i.invoice_id, p.payment_id FROM inv i JOIN pay p "
    "ON i.invoice_id = p.reference AND tolerance_match(i.amount, p.paid, 0.02)"
)


def _data() -> tuple[pa.Table, pa.Table]:
    rnd = random.Random(7)
    inv_ids, amounts, days = [], [], []
    pay_ids, refs, paid = [], [], []
    for n in range(1, 301):
        cents = rnd.randrange(100, 1_000_000)
        inv_ids.append(f"INV-{n:04d}")
        amounts.append(Decimal(cents).scaleb(-2))
        days.append(f"2024-0{1 + n % 3}-1{n % 9}")
        kind = n % 5
        if kind == 4:
            continue  # unpaid
        delta = {0: 0, 1: 2, 2: -2, 3: 3}[kind]  # ±0.02 must match, 0.03 must not
        pay_ids.append(n + 10_000)
        refs.append(f"INV-{n:04d}")
        paid.append(Decimal(cents + delta).scaleb(-2))
    for n in range(20):  # orphans
        pay_ids.append(20_000 + n)
        refs.append(f"ZZ-{n}")
        paid.append(Decimal("1.00"))
    inv = pa.table({"invoice_id": inv_ids, "amount": pa.array(amounts, pa.decimal128(12, 2)),
                    "booked": pa.array(days).cast(pa.date32())})  # fmt: skip
    pay = pa.table({"payment_id": pa.array(pay_ids, pa.int64()), "reference": refs,
                    "paid": pa.array(paid, pa.decimal128(12, 2))})  # fmt: skip
    return inv, pay


INV, PAY = _data()


def _request(
    inv_uri: str, pay_uri: str, inv_filters: list[dict[str, Any]] | None = None
) -> JobRequest:
    return JobRequest(
        match_sql=MATCH,
        sources=[
            JobSource(
                alias="inv", uri=inv_uri, filters=[FilterCondition(**f) for f in inv_filters or []]
            ),
            JobSource(alias="pay", uri=pay_uri),
        ],
        primary_keys={"inv": ["invoice_id"], "pay": ["payment_id"]},
    )


def _answer(result: Any) -> tuple[int, set[tuple[str, int]], list[str], list[int]]:
    matched = pq.read_table(result.output_paths.matched).to_pylist()
    pairs = {(m["left_key"]["invoice_id"], m["right_key"]["payment_id"]) for m in matched}
    left = sorted(
        pq.read_table(result.output_paths.unmatched_left).column("invoice_id").to_pylist()
    )
    right = sorted(
        pq.read_table(result.output_paths.unmatched_right).column("payment_id").to_pylist()
    )
    return result.matched_count, pairs, left, right


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("local")
    pacsv.write_csv(INV, root / "inv.csv")
    pacsv.write_csv(PAY, root / "pay.csv")
    pq.write_table(INV, root / "inv.parquet")
    pq.write_table(PAY, root / "pay.parquet")
    return {name: str(root / name) for name in ("inv.csv", "pay.csv", "inv.parquet", "pay.parquet")}


@pytest.fixture(scope="module")
def pg_tables(pg: PgServer) -> PgServer:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS e2e_inv, e2e_pay;"
                     "CREATE TABLE e2e_inv (invoice_id text PRIMARY KEY, amount numeric(12,2), booked date);"
                     "CREATE TABLE e2e_pay (payment_id bigint PRIMARY KEY, reference text, paid numeric(12,2))")  # fmt: skip
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO e2e_inv VALUES (%s, %s, %s)",
                [tuple(r.values()) for r in INV.to_pylist()],
            )
            cur.executemany(
                "INSERT INTO e2e_pay VALUES (%s, %s, %s)",
                [tuple(r.values()) for r in PAY.to_pylist()],
            )
    return pg


@pytest.fixture(scope="module")
def s3_objects(s3: S3Server, local: dict[str, str]) -> S3Server:
    for name, path in local.items():
        s3.put(f"e2e/{name.split('.')[1]}/{name}", Path(path))
        s3.put(
            f"e2e/{name.split('.')[0]}-{name.split('.')[1]}/part-1.{name.split('.')[1]}", Path(path)
        )
    return s3


@pytest.fixture(scope="module")
def truth(local: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    result = run_job(
        _request(local["inv.csv"], local["pay.csv"]), tmp_path_factory.mktemp("truth") / "run"
    )
    answer = _answer(result)
    assert answer[0] == 180 and len(answer[2]) == 120 and len(answer[3]) == 80  # by construction
    return answer


def test_postgres_on_both_sides(pg_tables: PgServer, truth: Any, tmp_path: Path) -> None:
    req = _request(pg_tables.uri("e2e_inv"), pg_tables.uri("e2e_pay"))
    result = run_job(req, tmp_path / "run")
    assert _answer(result) == truth
    metadata = (tmp_path / "run" / "metadata.json").read_text()
    assert PG_PASSWORD not in metadata
    assert not list((tmp_path / "run").rglob("*part000.parquet")), (
        "staging files must not outlive the run"
    )


def test_postgres_against_local_file(
    pg_tables: PgServer, local: dict[str, str], truth: Any, tmp_path: Path
) -> None:
    assert (
        _answer(run_job(_request(pg_tables.uri("e2e_inv"), local["pay.parquet"]), tmp_path / "run"))
        == truth
    )


def test_s3_csv_and_parquet(
    s3_objects: S3Server, s3_env: S3Server, local: dict[str, str], truth: Any, tmp_path: Path
) -> None:
    for fmt in ("csv", "parquet"):
        req = _request(
            f"s3://kalla-test/e2e/{fmt}/inv.{fmt}", f"s3://kalla-test/e2e/{fmt}/pay.{fmt}"
        )
        assert _answer(run_job(req, tmp_path / fmt)) == truth
        assert S3_SECRET_KEY not in (tmp_path / fmt / "metadata.json").read_text()
    req = _request("s3://kalla-test/e2e/inv-csv/", local["pay.csv"])  # a prefix
    assert _answer(run_job(req, tmp_path / "prefix")) == truth


def test_postgres_against_s3(
    pg_tables: PgServer, s3_objects: S3Server, s3_env: S3Server, truth: Any, tmp_path: Path
) -> None:
    req = _request(pg_tables.uri("e2e_inv"), "s3://kalla-test/e2e/parquet/pay.parquet")
    assert _answer(run_job(req, tmp_path / "run")) == truth


@pytest.mark.parametrize("where", ["local", "postgres", "s3"])
def test_filters_give_one_answer_on_every_connector(
    where: str,
    pg_tables: PgServer,
    s3_objects: S3Server,
    s3_env: S3Server,
    local: dict[str, str],
    tmp_path: Path,
) -> None:
    filters = [
        {"column": "amount", "op": "gte", "value": 1000},
        {"column": "booked", "op": "lt", "value": "2024-03-01"},
    ]
    inv_uri = {"local": local["inv.csv"], "postgres": pg_tables.uri("e2e_inv"),
               "s3": "s3://kalla-test/e2e/csv/inv.csv"}[where]  # fmt: skip
    result = run_job(_request(inv_uri, local["pay.csv"], filters), tmp_path / "run")
    kept = {r["invoice_id"] for r in INV.to_pylist()
            if r["amount"] >= Decimal(1000) and str(r["booked"]) < "2024-03-01"}  # fmt: skip
    _, pairs, unmatched_left, _ = _answer(result)
    assert {p[0] for p in pairs} | set(unmatched_left) == kept


def test_every_postgres_type_reaches_the_evidence_unchanged(pg: PgServer, tmp_path: Path) -> None:
    from tests.connectors.test_postgres import ALL_TYPES, read

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(ALL_TYPES.replace("all_types", "e2e_types"))
    direct = read(pg.uri("e2e_types"), tmp_path / "direct").sort_by("id")
    (tmp_path / "right.csv").write_text("rid,id\n1,999\n")
    req = JobRequest(
        match_sql="SELECT l.id FROM l JOIN r ON l.id = r.id",
        sources=[
            JobSource(alias="l", uri=pg.uri("e2e_types")),
            JobSource(alias="r", uri=str(tmp_path / "right.csv")),
        ],
        primary_keys={"l": ["id"], "r": ["rid"]},
    )
    result = run_job(req, tmp_path / "run")
    evidence = pq.read_table(result.output_paths.unmatched_left).sort_by("id")
    evidence = evidence.select(direct.column_names)  # the source's columns, before kalla's _reason…
    assert evidence.schema.remove_metadata().equals(direct.schema.remove_metadata())
    assert evidence.to_pylist() == direct.to_pylist()


def test_evidence_can_be_written_to_s3(s3_env: S3Server, tmp_path: Path) -> None:
    import json as _json
    import uuid as _uuid

    import obstore

    import kalla
    from kalla.connectors.s3 import S3Settings

    (tmp_path / "l.csv").write_text("id,ref,amount\n1,A,10.00\n2,B,20.00\n")
    (tmp_path / "r.csv").write_text("id,ref,amount\n7,A,10.01\n")
    recipe = {
        "recipe_id": "s3-out", "name": "to s3",
        "match_sql": "SELECT l.ref FROM l JOIN r ON l.ref = r.ref AND tolerance_match(l.amount, r.amount, 0.02)",
        "sources": {"left": {"alias": "l", "type": "file", "uri": str(tmp_path / "l.csv"), "primary_key": ["id"]},
                    "right": {"alias": "r", "type": "file", "uri": str(tmp_path / "r.csv"), "primary_key": ["id"]}},
    }  # fmt: skip
    run_id = _uuid.uuid4()
    out = f"s3://{s3_env.bucket}/evidence"
    result = kalla.reconcile(recipe, output=out, run_id=run_id)
    assert result.output_paths.matched == f"{out}/runs/{run_id}/matched.parquet"
    store = S3Settings.from_env().obstore(s3_env.bucket)
    keys = {
        m["path"] for batch in obstore.list(store, prefix=f"evidence/runs/{run_id}/") for m in batch
    }
    assert {k.rsplit("/", 1)[-1] for k in keys} == {
        "matched.parquet",
        "unmatched_left.parquet",
        "unmatched_right.parquet",
        "metadata.json",
    }
    meta = _json.loads(bytes(obstore.get(store, f"evidence/runs/{run_id}/metadata.json").bytes()))
    assert meta["status"] == "completed" and meta["matched_count"] == 1
    with pytest.raises(kalla.EvidenceExists):
        kalla.reconcile(recipe, output=out, run_id=run_id)
