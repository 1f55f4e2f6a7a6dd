"""CSV read per RFC 4180 with exact types: money stays decimal.

DataFusion would read ``12.34`` as Float64, and Arrow's decimal parser silently
truncates extra digits, so kalla infers types itself from *every* value:

* every column is first read as text (pyarrow's CSV reader: quoted commas, quoted
  newlines, doubled quotes, CRLF, UTF-8 with or without BOM, header-only files);
* a column whose values are all plain decimal numbers (``-12.5``, ``100.00``) with a
  fractional part becomes ``Decimal128`` with the largest scale seen — exact;
* integers without leading zeros → ``int64``; ISO dates → ``date32``; ISO timestamps →
  ``timestamp``; ``true/false`` → ``bool``; exponent notation → ``float64``;
  anything else, including IDs like ``007``, stays text (so evidence keeps it as written);
* types declared in the recipe's schema win, and a value that does not fit its declared
  type (``1.234`` in ``decimal(18,2)``) is an error, never a silent rounding.

Empty fields are NULL.
"""

from __future__ import annotations

import csv
import mmap
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..errors import SchemaMismatch, SourceNotFound, SourceReadFailed

__all__ = ["CsvColumns", "infer_types", "iter_text_batches", "read_header", "to_typed"]

_INT = r"^[+-]?(?:0|[1-9]\d{0,17})$"
_DECIMAL = r"^[+-]?(?:0|[1-9]\d*)(?:\.\d+)?$"
_FLOAT = r"^[+-]?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"
_BOOL = r"^(?i:true|false)$"
_DATE = r"^\d{4}-\d{2}-\d{2}$"
_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?$"
_TIMESTAMP_TZ = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})$"

_CANDIDATES = ("int", "decimal", "float", "bool", "date", "timestamp", "timestamptz")
_PATTERNS = {
    "int": _INT, "decimal": _DECIMAL, "float": _FLOAT, "bool": _BOOL,
    "date": _DATE, "timestamp": _TIMESTAMP, "timestamptz": _TIMESTAMP_TZ,
}  # fmt: skip
_SAMPLE = 1000
#: A value matching the key's pattern also matches these (int ⊂ decimal ⊂ float): skip the scan.
_IMPLIES = {"int": {"decimal", "float"}, "decimal": {"float"}}


def read_header(path: str) -> list[str]:
    """Column names from the first record (quoted names allowed); a duplicate is an error."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), None)
    except FileNotFoundError:
        raise SourceNotFound(f"file {path!r} does not exist") from None
    except UnicodeDecodeError:
        raise SourceReadFailed(f"file {path!r} is not UTF-8 text") from None
    if not header or header == [""]:
        raise SourceReadFailed(f"file {path!r} is empty: a CSV source needs a header row")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise SourceReadFailed(f"file {path!r} has duplicate column names: {dupes}")
    return header


def _has_quotes(path: str) -> bool:
    with open(path, "rb") as fh:
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return mm.find(b'"') != -1
        except ValueError:  # empty file
            return False


def iter_text_batches(
    paths: list[str],
    columns: list[str],
    *,
    streaming: bool,
    declared: dict[str, pa.DataType] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Every row of every file, in file order: declared columns typed, the others as text.

    Arrow's CSV parser refuses a declared decimal with too many fractional digits (it
    would lose data), so declared columns need no second pass.
    """
    declared = declared or {}
    convert = pacsv.ConvertOptions(
        column_types={c: declared.get(c, pa.string()) for c in columns},
        strings_can_be_null=True,
        null_values=[""],
        quoted_strings_can_be_null=True,
    )
    for path in paths:
        header = read_header(path)
        if header != columns:
            raise SchemaMismatch(
                f"file {path!r} has columns {header}, but the first file of the source has {columns}"
            )
        # Quoted newlines force a slower serial parse; only pay for it when a quote exists.
        parse = pacsv.ParseOptions(newlines_in_values=_has_quotes(path))
        read = pacsv.ReadOptions(block_size=16 << 20)
        try:
            if streaming:
                with pacsv.open_csv(
                    path, read_options=read, parse_options=parse, convert_options=convert
                ) as reader:
                    yield from reader
            else:
                table = pacsv.read_csv(
                    path, read_options=read, parse_options=parse, convert_options=convert
                )
                yield from table.to_batches()
        except pa.ArrowInvalid as exc:
            m = re.search(r"In CSV column #(\d+): ", str(exc))
            if m and int(m.group(1)) < len(columns) and columns[int(m.group(1))] in declared:
                name = columns[int(m.group(1))]
                raise _declared_mismatch(path, name, declared[name], exc) from None
            raise SourceReadFailed(f"file {path!r} is not valid CSV: {exc}") from None


def _declared_mismatch(path: str, name: str, target: pa.DataType, exc: Exception) -> SchemaMismatch:
    """Name the column and the first value that does not fit its declared type."""
    convert = pacsv.ConvertOptions(column_types={name: pa.string()}, include_columns=[name])
    try:
        values = (
            pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(newlines_in_values=_has_quotes(path)),
                convert_options=convert,
            )
            .column(name)
            .combine_chunks()
        )
        bad = _first_bad(values, target)
    except pa.ArrowInvalid:
        bad = None
    return SchemaMismatch(
        f"file {path!r}: column {name!r} has a value that is not {_type_name(target)}"
        + (f": {bad!r}" if bad is not None else "")
        + f" ({_reason(exc)})",
        column=name,
    )


@dataclass
class _ColumnState:
    candidates: set[str] = field(default_factory=lambda: set(_CANDIDATES))
    seen_values: bool = False
    seen_fraction: bool = False
    seen_float_marker: bool = False
    scale: int = 0
    int_digits: int = 1

    def update(self, values: pa.Array) -> None:
        values = values.drop_null()
        if len(values) == 0 or not self.candidates:
            return
        self.seen_values = True
        # A cheap look at a sample rules out most candidates before any full scan.
        for sample in (values.slice(0, _SAMPLE), values):
            implied: set[str] = set()
            for kind in [k for k in _CANDIDATES if k in self.candidates]:
                if kind in implied:
                    continue
                if pc.all(pc.match_substring_regex(sample, _PATTERNS[kind])).as_py():
                    implied |= _IMPLIES.get(kind, set())
                else:
                    self.candidates.discard(kind)
            if not self.candidates:
                return
        if "float" in self.candidates and not self.seen_float_marker:
            self.seen_float_marker = pc.any(pc.match_substring_regex(values, "[.eE]")).as_py()
        if "decimal" in self.candidates:
            dot = pc.find_substring(values, ".")
            length = pc.utf8_length(values)
            has_dot = pc.greater_equal(dot, 0)
            sign = pc.cast(pc.match_substring_regex(values, r"^[+-]"), pa.int32())
            frac = pc.if_else(has_dot, pc.subtract(pc.subtract(length, dot), 1), 0)
            whole = pc.subtract(pc.if_else(has_dot, dot, length), sign)
            self.seen_fraction |= pc.any(has_dot).as_py()
            self.scale = max(self.scale, pc.max(frac).as_py() or 0)
            self.int_digits = max(self.int_digits, pc.max(whole).as_py() or 1)
        for kind in ("date", "timestamp", "timestamptz"):
            if kind in self.candidates:
                try:
                    pc.cast(values, _arrow(kind, self))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    self.candidates.discard(kind)

    def result(self) -> pa.DataType:
        if not self.seen_values:
            return pa.string()
        for kind in ("bool", "int", "decimal", "date", "timestamp", "timestamptz", "float"):
            if kind not in self.candidates:
                continue
            if kind == "decimal" and (not self.seen_fraction or self.int_digits + self.scale > 38):
                continue
            if kind == "float" and not self.seen_float_marker:
                continue
            return _arrow(kind, self)
        return pa.string()


def _arrow(kind: str, state: _ColumnState) -> pa.DataType:
    if kind == "decimal":
        return pa.decimal128(max(18, state.int_digits + state.scale), state.scale)
    return {
        "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "date": pa.date32(),
        "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC"),
    }[kind]  # fmt: skip


@dataclass
class CsvColumns:
    """The inferred (or declared) type of every column of a CSV source."""

    names: list[str]
    types: dict[str, pa.DataType]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(n, self.types[n]) for n in self.names])


def infer_types(
    batches: Iterator[pa.RecordBatch] | list[pa.RecordBatch],
    names: list[str],
    declared: dict[str, pa.DataType],
) -> CsvColumns:
    """Types for ``names`` from every value; declared types are taken as given."""
    states = {n: _ColumnState() for n in names if n not in declared}
    # pyarrow.compute releases the GIL: columns are inferred in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for batch in batches:
            list(pool.map(_ColumnState.update, states.values(), [batch.column(n) for n in states]))
    types = {n: declared[n] if n in declared else states[n].result() for n in names}
    return CsvColumns(names=names, types=types)


def to_typed(batch: pa.RecordBatch, columns: CsvColumns, source: str) -> pa.RecordBatch:
    """Cast a text batch to the source's types; a value that does not fit is an error."""
    arrays = []
    for name in columns.names:
        target = columns.types[name]
        values = batch.column(name)
        if target == pa.string() or values.type == target:
            arrays.append(values)
            continue
        try:
            if pa.types.is_boolean(target):
                arrays.append(pc.equal(pc.utf8_lower(values), "true"))
            else:
                arrays.append(pc.cast(values, target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            bad = _first_bad(values, target)
            raise SchemaMismatch(
                f"source {source!r}: column {name!r} has a value that is not {_type_name(target)}"
                + (f": {bad!r}" if bad is not None else "")
                + f" ({_reason(exc)})",
                column=name,
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=columns.schema)


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    return str(t)


def _reason(exc: Exception) -> str:
    text = str(exc)
    return (
        "more fractional digits than the type allows"
        if "data loss" in text
        else text.split("\n")[0]
    )


def _first_bad(values: pa.Array, target: pa.DataType) -> str | None:
    for value in values.drop_null().slice(0, 100_000).to_pylist():
        try:
            pc.cast(pa.array([value]), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return str(value)
    return None
