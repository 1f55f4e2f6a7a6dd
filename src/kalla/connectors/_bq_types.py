"""BigQuery columns as exact Arrow types, and job filters as a Storage Read row restriction.

No vendor SDK is imported here: columns are described by their REST ``field_type`` and
``mode``, so this module is testable on its own.

Filter values are validated and written as typed literals (``NUMERIC '1.20'``,
``DATE '2024-01-05'``), never as bare floats: a NUMERIC column compared with a FLOAT64
literal would be coerced to floating point and lose the exact boundary. Identifiers are
backquoted (BigQuery column names are letters, digits and underscores, so no escaping is
needed, and the name is checked against the table's schema first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation

import pyarrow as pa

from ..errors import FilterInvalid
from ..job import FilterCondition, FilterOp

__all__ = ["BqColumn", "RowRestriction", "arrow_for", "row_restriction"]

_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "STRUCT": "RECORD"}

_DIRECT: dict[str, pa.DataType] = {
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIME": pa.time64("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class BqColumn:
    """One top-level column of a BigQuery table, as its REST schema describes it."""

    name: str
    field_type: str  # canonical: INT64, FLOAT64, NUMERIC, ..., RECORD, JSON, GEOGRAPHY
    mode: str = "NULLABLE"  # NULLABLE | REQUIRED | REPEATED

    @classmethod
    def of(cls, name: str, field_type: str, mode: str | None = None) -> BqColumn:
        kind = field_type.upper()
        return cls(name, _ALIASES.get(kind, kind), (mode or "NULLABLE").upper())

    @property
    def scalar(self) -> bool:
        return self.mode != "REPEATED" and self.field_type in _DIRECT


def arrow_for(col: BqColumn, declared: pa.DataType | None = None) -> pa.DataType | None:
    """The Arrow type ``col`` is staged as; ``None`` keeps what the Storage API sends
    (repeated fields and records arrive as Arrow lists and structs)."""
    if declared is not None:
        return declared
    if col.mode == "REPEATED" or col.field_type == "RECORD":
        return None
    # JSON, GEOGRAPHY, INTERVAL, RANGE, ...: their BigQuery text form.
    return _DIRECT.get(col.field_type, pa.string())


@dataclass(frozen=True)
class RowRestriction:
    """The SQL predicate for the read session (``""`` when nothing was pushed down)."""

    sql: str
    #: True when every filter was pushed down, so the engine need not apply them again.
    complete: bool


def _quote_string(value: str) -> str:
    escaped = (
        value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    )
    return f"'{escaped}'"


def _literal(col: BqColumn, value: int | Decimal | str, where: str) -> str:
    kind = col.field_type
    text = format(value, "f") if isinstance(value, Decimal) else str(value)
    try:
        if kind == "INT64":
            number = Decimal(text)
            if number != number.to_integral_value():
                raise ValueError("not a whole number")
            return str(int(number))
        if kind in ("NUMERIC", "BIGNUMERIC"):
            number = Decimal(text)
            if not number.is_finite():
                raise ValueError("not a finite number")
            return f"{kind} '{format(number, 'f')}'"
        if kind == "FLOAT64":
            float(text)
            return f"CAST({_quote_string(text)} AS FLOAT64)"
        if kind == "BOOL":
            lowered = text.strip().lower()
            if lowered in ("true", "1"):
                return "TRUE"
            if lowered in ("false", "0"):
                return "FALSE"
            raise ValueError("not true or false")
        if kind == "DATE":
            return f"DATE '{date.fromisoformat(text).isoformat()}'"
        if kind == "DATETIME":
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is not None:
                raise ValueError("a DATETIME has no time zone")
            return f"DATETIME '{parsed.isoformat(sep=' ')}'"
        if kind == "TIMESTAMP":
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return f"TIMESTAMP '{parsed.isoformat(sep=' ')}'"  # naive means UTC, as in the engine
        if kind == "TIME":
            return f"TIME '{time.fromisoformat(text).isoformat()}'"
    except (ValueError, InvalidOperation) as exc:
        raise FilterInvalid(
            f"{where}: value {text!r} does not fit column {col.name!r} of type {kind}",
            column=col.name,
        ) from exc
    return _quote_string(text)  # STRING


def row_restriction(
    filters: list[FilterCondition], columns: dict[str, BqColumn], *, alias: str, table: str
) -> RowRestriction:
    """The row restriction for ``filters``; ``FilterInvalid`` for unknown columns or misfits.

    Filters on columns without an exact BigQuery comparison (BYTES, JSON, GEOGRAPHY,
    records, repeated fields) are left to the engine, and ``complete`` is then false.
    """
    clauses: list[str] = []
    complete = True
    for f in filters:
        col = columns.get(f.column)
        where = f"source {alias!r}: filter {f.column} {f.op.value} {f.value!r} on table {table}"
        if col is None:
            raise FilterInvalid(
                f"source {alias!r}: filter on unknown column {f.column!r} of table {table}; "
                f"columns are: {', '.join(columns)}",
                alias=alias,
                column=f.column,
            )
        if f.op is FilterOp.LIKE and col.field_type != "STRING":
            raise FilterInvalid(
                f"source {alias!r}: 'like' needs a text column, but {f.column!r} of table "
                f"{table} is {col.field_type}",
                alias=alias,
                column=f.column,
            )
        if not col.scalar or col.field_type == "BYTES":
            complete = False
            continue
        values = f.value if isinstance(f.value, list) else [f.value]
        literals = [_literal(col, v, where) for v in values]
        ident = f"`{col.name}`"
        if f.op.comparison is not None:
            clause = f"{ident} {f.op.comparison} {literals[0]}"
        elif f.op is FilterOp.BETWEEN:
            clause = f"{ident} BETWEEN {literals[0]} AND {literals[1]}"
        elif f.op is FilterOp.IN:
            clause = f"{ident} IN ({', '.join(literals)})"
        else:  # LIKE, on a STRING column
            clause = f"{ident} LIKE {literals[0]}"
        clauses.append(f"({clause})")
    return RowRestriction(" AND ".join(clauses), complete)
