"""PostgreSQL column types → exact Arrow types, and the SELECT expression that reads each.

Money must never pass through a float (the original decoded ``numeric`` to NULL), so
``numeric(p,s)`` becomes ``decimal128(p,s)``; an unconstrained ``numeric`` gets a decimal
wide enough for the values actually in the table (measured in the read snapshot), or the
type the job's ``schema`` declares. Types Arrow has no exact twin for (``uuid``, ``json``,
``jsonb``, enums, arrays, ``interval``, …) are read as their PostgreSQL text form, which is
what a match rule compares them with.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = ["TEXT_TYPES", "PgColumn", "arrow_for", "needs_probe", "quote_ident", "select_expr"]

#: Types ``like`` filters accept.
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name", "citext"})

_DIRECT: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "time": pa.time64("us"),
    "bytea": pa.binary(),
}

#: Above this precision a declared ``numeric(p,s)`` does not fit ``decimal128``; it is measured.
MAX_DECIMAL128 = 38


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, always quoted, so case and odd characters survive."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class PgColumn:
    """One column as the catalog describes it (domains resolved to their base type)."""

    name: str
    typname: str  # base type's pg_type.typname, e.g. "numeric", "int8", "_text"
    sql_type: str  # format_type(base, NULL): the type filter values are cast to
    typmod: int  # base typmod (-1 when unconstrained)
    is_domain: bool = False

    @property
    def numeric_precision_scale(self) -> tuple[int, int] | None:
        """``(p, s)`` of a constrained ``numeric``; ``None`` when unconstrained or not numeric."""
        if self.typname != "numeric" or self.typmod < 4:
            return None
        packed = self.typmod - 4  # VARHDRSZ
        precision = (packed >> 16) & 0xFFFF
        scale = packed & 0x7FF
        if scale & 0x400:  # negative scale (PostgreSQL 15+)
            scale -= 0x800
        return precision, scale


def needs_probe(col: PgColumn) -> bool:
    """Whether a ``numeric`` column's decimal type must be measured from its values."""
    if col.typname != "numeric":
        return False
    ps = col.numeric_precision_scale
    return ps is None or ps[0] > MAX_DECIMAL128 or ps[1] < 0


def arrow_for(col: PgColumn, decimal: pa.Decimal128Type | None = None) -> pa.DataType:
    """The Arrow type a column is delivered as. ``decimal`` is the measured/declared type."""
    if col.typname == "numeric":
        if decimal is not None:
            return decimal
        ps = col.numeric_precision_scale
        assert ps is not None, "unconstrained numeric needs a measured decimal type"
        return pa.decimal128(*ps)
    return _DIRECT.get(col.typname, pa.string())


def select_expr(col: PgColumn) -> str:
    """The SELECT-list expression reading ``col`` in the form :func:`arrow_for` expects.

    ``numeric`` travels as PostgreSQL's own text form and is parsed into an exact decimal by
    Arrow: ADBC would otherwise turn the binary form into the same text itself, which cost a
    third of the client's CPU on the benchmark tables (3.6–4.3 s vs 2.9–3.2 s for 2M invoice
    rows), and the client is what limits a read.
    """
    ident = quote_ident(col.name)
    if col.typname == "numeric":
        return f"{ident}::text AS {ident}"
    if col.typname in _DIRECT:
        if col.is_domain:
            return f"{ident}::{col.sql_type} AS {ident}"
        return ident
    return f"{ident}::text AS {ident}"
