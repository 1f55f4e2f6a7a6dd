"""CSV per RFC 4180 with exact types inferred from every value."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from kalla.engine._csv import infer_types, iter_text_batches, read_header, to_typed
from kalla.errors import SchemaMismatch, SourceReadFailed


def load(path: Path, declared: dict | None = None) -> pa.Table:
    header = read_header(str(path))
    batches = list(iter_text_batches([str(path)], header, streaming=False))
    cols = infer_types(batches, header, declared or {})
    return pa.Table.from_batches([to_typed(b, cols, "src") for b in batches], schema=cols.schema)


def test_rfc4180_quoting_newlines_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_bytes(
        b'\xef\xbb\xbfid,name,note\r\n1,"Acme, Inc.","two\r\nlines"\r\n2,"say ""hi""",\r\n3,Caf\xc3\xa9,x\r\n'
    )
    t = load(path)
    assert t.column_names == ["id", "name", "note"]
    assert t.to_pylist() == [
        {"id": 1, "name": "Acme, Inc.", "note": "two\r\nlines"},
        {"id": 2, "name": 'say "hi"', "note": None},
        {"id": 3, "name": "Café", "note": "x"},
    ]


def test_decimal_text_is_read_as_exact_decimal_with_the_largest_scale(tmp_path: Path) -> None:
    path = tmp_path / "money.csv"
    path.write_text("amount,rate\n100.00,1e3\n-3.5,2.5e-1\n7,1\n12345678.125,0.5\n")
    t = load(path)
    assert t.schema.field("amount").type == pa.decimal128(18, 3)
    assert t.column("amount").to_pylist() == [
        Decimal("100.000"),
        Decimal("-3.500"),
        Decimal("7.000"),
        Decimal("12345678.125"),
    ]
    assert t.schema.field("rate").type == pa.float64()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "22", "-3"], pa.int64()),
        (["007", "8"], pa.string()),  # leading zeros are identifiers, kept as written
        (["2026-01-31", "2024-02-29"], pa.date32()),
        (["2026-01-31", "2026-02-30"], pa.string()),
        (["2026-01-31T10:00:00", "2026-01-31 11:30:00.5"], pa.timestamp("us")),
        (["true", "FALSE"], pa.bool_()),
        (["12345678901234567890123"], pa.string()),  # too big for int64, no fraction
        (["INV-1", "2"], pa.string()),
    ],
)
def test_inference_uses_every_value(
    tmp_path: Path, values: list[str], expected: pa.DataType
) -> None:
    path = tmp_path / "v.csv"
    path.write_text("v\n" + "\n".join(values) + "\n")
    assert load(path).schema.field("v").type == expected


def test_a_value_far_down_the_file_still_decides_the_scale(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("amount\n" + "1.50\n" * 5000 + "2.125\n")
    t = load(path)
    assert t.schema.field("amount").type.scale == 3
    assert t.column("amount")[-1].as_py() == Decimal("2.125")


def test_declared_types_win_and_never_round_silently(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,amount\n001,1.23\n002,1.234\n")
    t = load(path, {"id": pa.string(), "amount": pa.decimal128(18, 3)})
    assert t.column("id").to_pylist() == ["001", "002"]
    with pytest.raises(SchemaMismatch, match=r"'amount'.*1\.234.*fractional digits"):
        load(path, {"amount": pa.decimal128(18, 2)})


def test_header_only_file_gives_an_empty_typed_table(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("id,amount\n")
    t = load(path)
    assert t.num_rows == 0 and t.column_names == ["id", "amount"]


def test_empty_file_and_duplicate_headers_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(SourceReadFailed, match="header"):
        read_header(str(tmp_path / "e.csv"))
    (tmp_path / "dup.csv").write_text("id,id\n1,2\n")
    with pytest.raises(SourceReadFailed, match="duplicate column"):
        read_header(str(tmp_path / "dup.csv"))
