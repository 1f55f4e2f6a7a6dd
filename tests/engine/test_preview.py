"""Scoped preview of local files: typed first rows, filters, limits, a limited scan."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kalla import Engine, preview_source
from kalla.engine._preview import MAX_PREVIEW_LIMIT, PREVIEW_SCAN_ROWS
from kalla.errors import (
    FilterInvalid,
    JobInvalid,
    SchemaMismatch,
    SourceNotFound,
    SourceReadFailed,
)


def test_csv_preview_is_typed_filtered_and_limited(tmp_path: Path) -> None:
    path = tmp_path / "pay.csv"
    path.write_text(
        "id,amount,booked\nP1,10.00,2026-01-05\nP2,99.90,2026-01-06\nP3,5.5,2025-12-01\nP4,1.25,2026-02-01\n"
    )
    table = preview_source(
        str(path), filters=[{"column": "booked", "op": "gte", "value": "2026-01-01"}], limit=2
    )
    assert table.schema == pa.schema(
        [("id", pa.string()), ("amount", pa.decimal128(18, 2)), ("booked", pa.date32())]
    )
    assert table.to_pylist() == [
        {"id": "P1", "amount": Decimal("10.00"), "booked": dt.date(2026, 1, 5)},
        {"id": "P2", "amount": Decimal("99.90"), "booked": dt.date(2026, 1, 6)},
    ]
    declared = preview_source(str(path), schema={"amount": "decimal(10,3)"}, limit=1)
    assert declared.schema.field("amount").type == pa.decimal128(10, 3)


def test_parquet_folder_preview(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(3):
        pq.write_table(
            pa.table({"k": list(range(i * 100, i * 100 + 100))}), folder / f"p{i}.parquet"
        )
    table = preview_source(
        str(folder), filters=[{"column": "k", "op": "gt", "value": 150}], limit=5
    )
    assert table.num_rows == 5 and all(v > 150 for v in table.column("k").to_pylist())
    assert (
        preview_source(str(folder), filters=[{"column": "k", "op": "gt", "value": 10**6}]).num_rows
        == 0
    )


def test_local_csv_preview_never_reads_past_its_scan(tmp_path: Path) -> None:
    # A malformed line far past the scan (beyond pyarrow's 16 MiB first block): a full read
    # fails on it, a preview never gets there.
    path = tmp_path / "big.csv"
    row = "ID-00000001,12.34\n"
    count = (17 << 20) // len(row)
    assert count > PREVIEW_SCAN_ROWS
    path.write_text("id,amount\n" + row * count + "broken,line,with,too,many,fields\n")
    table = preview_source(str(path), limit=3)
    assert table.num_rows == 3 and table.schema.field("amount").type == pa.decimal128(18, 2)
    with Engine() as engine, pytest.raises(SourceReadFailed, match="not valid CSV"):
        engine.register_uri("big", str(path))


def test_limits_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id\n" + "".join(f"{i}\n" for i in range(MAX_PREVIEW_LIMIT + 5)))
    assert preview_source(str(path), limit=10**9).num_rows == MAX_PREVIEW_LIMIT
    with pytest.raises(JobInvalid, match="at least 1"):
        preview_source(str(path), limit=0)
    with pytest.raises(FilterInvalid, match="nope"):
        preview_source(str(path), filters=[{"column": "nope", "op": "eq", "value": 1}])
    with pytest.raises(SchemaMismatch, match="amount"):
        preview_source(str(path), schema={"amount": "decimal(18,2)"})
    with pytest.raises(SourceNotFound):
        preview_source(str(tmp_path / "missing.csv"))
    # Nothing is left behind: previews stage into a temporary folder they remove.
    staging = tmp_path / "staging"
    staging.mkdir()
    preview_source(str(path), staging_dir=staging)
    assert list(staging.iterdir()) == []
