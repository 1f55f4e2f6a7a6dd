"""DuckDB baseline: the work of one kalla run, written the way a competent DuckDB user would.

Usage::

    python benchmarks/duckdb_baseline.py DIR OUT

``DIR`` is a data set from ``benchmarks/generate.py`` (its ``manifest.json`` names the shape and
format; without one, ``one_to_one`` CSV is assumed). Both sources are loaded once into tables with
explicit column types — amounts ``DECIMAL(18,2)``, so the tolerance test is exact — then the
matching rule of the shape's recipe (``tolerance_match(a, b, t)`` spelled ``abs(a - b) <= t``) is
materialised once and three ``COPY`` statements write ``OUT/matched.parquet`` and the full source
rows of unmatched records, by anti-join on the primary keys, to ``OUT/unmatched_left.parquet`` and
``OUT/unmatched_right.parquet``. Prints the counts as one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import duckdb

_INVOICE_TYPES = {
    "invoice_id": "VARCHAR",
    "customer_id": "VARCHAR",
    "customer_name": "VARCHAR",
    "invoice_date": "DATE",
    "due_date": "DATE",
    "amount": "DECIMAL(18,2)",
    "currency": "VARCHAR",
    "status": "VARCHAR",
    "description": "VARCHAR",
    "batch_ref": "VARCHAR",
}
_PAYMENT_TYPES = {
    "payment_id": "VARCHAR",
    "payer_id": "VARCHAR",
    "payer_name": "VARCHAR",
    "payment_date": "DATE",
    "paid_amount": "DECIMAL(18,2)",
    "currency": "VARCHAR",
    "payment_method": "VARCHAR",
    "reference_number": "VARCHAR",
    "bank_reference": "VARCHAR",
    "notes": "VARCHAR",
}

# The recipes of benchmarks/generate.py, on tables named invoices and payments.
MATCH_SQL = {
    "one_to_one": """
        SELECT i.invoice_id, i.customer_id, i.amount, p.payment_id, p.paid_amount, p.payment_date
        FROM invoices i
        JOIN payments p
          ON i.invoice_id = p.reference_number
         AND abs(i.amount - p.paid_amount) <= 0.02""",
    "split": """
        SELECT i.invoice_id, i.amount, p.payment_id, p.paid_amount, p.payment_date
        FROM invoices i
        JOIN payments p ON i.invoice_id = p.reference_number""",
    "batch": """
        SELECT i.invoice_id, i.batch_ref, i.amount, p.payment_id, p.paid_amount
        FROM invoices i
        JOIN payments p ON i.batch_ref = p.reference_number""",
    "cross": """
        SELECT i.invoice_id, i.customer_id, i.currency, i.invoice_date, p.payment_id,
               p.payment_date
        FROM invoices i
        JOIN payments p
          ON i.customer_id = p.payer_id
         AND i.currency = p.currency
         AND date_trunc('month', i.invoice_date) = date_trunc('month', p.payment_date)""",
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _load(con: duckdb.DuckDBPyConnection, table: str, path: Path, types: dict[str, str]) -> None:
    """Load a source once; CSV columns get explicit types instead of sniffed ones."""
    if path.suffix == ".parquet":
        source = f"read_parquet({_literal(str(path))})"
    else:
        columns = ", ".join(f"{_literal(name)}: {_literal(t)}" for name, t in types.items())
        source = f"read_csv({_literal(str(path))}, header = true, columns = {{{columns}}})"
    con.execute(f"CREATE TABLE {table} AS SELECT * FROM {source}")


def _copy(con: duckdb.DuckDBPyConnection, query: str, target: Path) -> int:
    row = con.execute(f"COPY ({query}) TO {_literal(str(target))} (FORMAT parquet)").fetchone()
    return int(row[0]) if row else 0


def reconcile(directory: Path, out: Path) -> dict[str, object]:
    """Run the shape's recipe on the data set in ``directory``; evidence goes to ``out``."""
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    shape = manifest.get("shape", "one_to_one")
    fmt = manifest.get("format", "csv")
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    con = duckdb.connect()
    _load(con, "invoices", directory / f"invoices.{fmt}", _INVOICE_TYPES)
    _load(con, "payments", directory / f"payments.{fmt}", _PAYMENT_TYPES)
    con.execute(f"CREATE TEMP TABLE matched AS {MATCH_SQL[shape]}")
    matched = _copy(con, "SELECT * FROM matched", out / "matched.parquet")
    unmatched_left = _copy(
        con,
        "SELECT i.* FROM invoices i WHERE NOT EXISTS "
        "(SELECT 1 FROM matched m WHERE m.invoice_id = i.invoice_id)",
        out / "unmatched_left.parquet",
    )
    unmatched_right = _copy(
        con,
        "SELECT p.* FROM payments p WHERE NOT EXISTS "
        "(SELECT 1 FROM matched m WHERE m.payment_id = p.payment_id)",
        out / "unmatched_right.parquet",
    )
    con.close()
    return {
        "engine": "duckdb",
        "duckdb_version": duckdb.__version__,
        "shape": shape,
        "matched": matched,
        "unmatched_left": unmatched_left,
        "unmatched_right": unmatched_right,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python benchmarks/duckdb_baseline.py DIR OUT", file=sys.stderr)
        return 2
    print(json.dumps(reconcile(Path(args[0]), Path(args[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
