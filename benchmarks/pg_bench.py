"""PostgreSQL benchmark: ``kalla run`` end to end and read throughput against raw ``COPY``.

Usage::

    python benchmarks/pg_bench.py --rows 1000000 [--rows 5000000] [--partitions N]

For each size it generates the ``one_to_one`` data (``benchmarks/generate.py``), loads both
tables into a throwaway PostgreSQL cluster on 127.0.0.1 (the test fixture's), then measures:

* ``copy_s``: ``COPY (SELECT <every column> FROM invoices) TO STDOUT (FORMAT binary)`` read by
  psycopg and discarded — the practical ceiling for getting rows out of the server;
* ``read_s``: kalla's PostgreSQL connector reading the same table into Parquet staging files
  (snapshot, partitions, exact types), and ``read_vs_copy`` = copy_s / read_s;
* ``run_s`` and ``peak_rss_mb``: ``kalla run --json`` of the recipe with both sources on
  PostgreSQL, in a child process (its own peak RSS), with the answer checked against the
  generator's manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.generate import generate  # noqa: E402
from tests.connectors.servers import PgServer  # noqa: E402

_PG_TYPES = {"string": "text", "date32[day]": "date", "decimal128(18, 2)": "numeric(18,2)"}


def load(conn: psycopg.Connection, name: str, parquet: Path, work: Path) -> None:
    table = pq.read_table(parquet)
    cols = ", ".join(f'"{f.name}" {_PG_TYPES.get(str(f.type), "text")}' for f in table.schema)
    conn.execute(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} ({cols})")
    csv = work / f"{name}.csv"
    pacsv.write_csv(table, csv)
    with (
        conn.cursor().copy(f"COPY {name} FROM STDIN (FORMAT csv, HEADER)") as copy,
        csv.open("rb") as f,
    ):
        while chunk := f.read(1 << 20):
            copy.write(chunk)
    csv.unlink()
    conn.execute(f"VACUUM ANALYZE {name}")


def raw_copy_seconds(dsn: str, table: str) -> float:
    t0 = time.perf_counter()
    sql = f"COPY (SELECT * FROM {table}) TO STDOUT (FORMAT binary)"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(sql) as copy:
        for _ in copy:
            pass
    return time.perf_counter() - t0


def read_seconds(uri: str, staging: Path, partitions: int | None) -> float:
    from kalla.connectors import ConnectorContext
    from kalla.connectors.postgres import PostgresConnector
    from kalla.job import JobSource

    options = {"postgres_partitions": partitions} if partitions else {}
    t0 = time.perf_counter()
    PostgresConnector().open(JobSource(alias="inv", uri=uri), ConnectorContext(staging, options))
    return time.perf_counter() - t0


def run_seconds(recipe: Path, pg: PgServer, out: Path) -> tuple[float, float, dict[str, int]]:
    kalla = Path(sys.executable).with_name("kalla")
    cmd = [str(kalla), "run", str(recipe), "-o", str(out), "--json",
           "--source", f"left_src={pg.uri('invoices')}", "--source", f"right_src={pg.uri('payments')}"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    stdout = proc.stdout.read() if proc.stdout else b""
    if status != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"kalla run failed: {err[-2000:]}")
    payload = json.loads(stdout)
    counts = {
        k: payload[k] for k in ("matched_count", "unmatched_left_count", "unmatched_right_count")
    }
    return elapsed, usage.ru_maxrss / 1024, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="invoices per run (repeatable)")
    parser.add_argument(
        "--partitions", type=int, default=None, help="connector partitions (default: auto)"
    )
    args = parser.parse_args()
    pg = PgServer.start()
    try:
        for rows in args.rows or [1_000_000]:
            with tempfile.TemporaryDirectory(prefix="kalla-pgbench-") as tmp:
                work = Path(tmp)
                data = generate("one_to_one", rows, work / "data", fmt="parquet")
                with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                    t0 = time.perf_counter()
                    load(conn, "invoices", data.left, work)
                    load(conn, "payments", data.right, work)
                    load_s = time.perf_counter() - t0
                copy_s = min(raw_copy_seconds(pg.dsn(), "invoices") for _ in range(2))
                read_s = min(
                    read_seconds(pg.uri("invoices"), work / f"staging{i}", args.partitions)
                    for i in range(2)
                )
                run_s, rss, counts = run_seconds(data.recipe, pg, work / "out")
                expected = {"matched_count": data.expected.matched,
                            "unmatched_left_count": data.expected.unmatched_left,
                            "unmatched_right_count": data.expected.unmatched_right}  # fmt: skip
                print(json.dumps({
                    "rows": rows, "right_rows": data.right_rows, "load_s": round(load_s, 1),
                    "copy_s": round(copy_s, 2), "read_s": round(read_s, 2),
                    "read_vs_copy": round(copy_s / read_s, 2), "run_s": round(run_s, 2),
                    "peak_rss_mb": round(rss), "correct": counts == expected, **counts,
                }), flush=True)  # fmt: skip
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
