"""Column declarations: ``schema`` lists column names, or maps them to types.

Types are written the way finance people and SQL write them (``decimal(18,2)``,
``date``, ``text``) and map to one Arrow type each.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import pyarrow as pa
from pydantic import BeforeValidator

__all__ = ["ColumnSchema", "arrow_type", "schema_columns", "schema_types"]

_DECIMAL = re.compile(r"^(?:decimal|numeric)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$")
_SIMPLE: dict[str, pa.DataType] = {
    "string": pa.string(),
    "text": pa.string(),
    "varchar": pa.string(),
    "utf8": pa.string(),
    "int": pa.int64(),
    "integer": pa.int64(),
    "bigint": pa.int64(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "smallint": pa.int16(),
    "int16": pa.int16(),
    "float": pa.float64(),
    "double": pa.float64(),
    "float64": pa.float64(),
    "real": pa.float32(),
    "float32": pa.float32(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "decimal": pa.decimal128(38, 10),
    "numeric": pa.decimal128(38, 10),
}


def arrow_type(name: str) -> pa.DataType:
    """Map a declared type name to its Arrow type; ``ValueError`` names the accepted ones."""
    text = name.strip().lower()
    if text in _SIMPLE:
        return _SIMPLE[text]
    m = _DECIMAL.match(text)
    if m:
        precision, scale = int(m.group(1)), int(m.group(2) or 0)
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"decimal precision must be 1..38 and scale ≤ precision, got {name!r}")
        return pa.decimal128(precision, scale)
    if re.match(r"^(decimal|numeric)\s*\(\s*\d+\s*$", text):
        raise ValueError(
            f"column type {name!r} is cut at its comma: in a YAML flow mapping {{…}} write it "
            "quoted, 'decimal(18,2)', or use one line per column"
        )
    accepted = ", ".join(sorted(_SIMPLE)) + ", decimal(p,s)"
    raise ValueError(f"unknown column type {name!r}; use one of: {accepted}")


def _check(value: Any) -> Any:
    if isinstance(value, dict):
        for _column, type_name in value.items():
            if type_name is not None:
                arrow_type(str(type_name))
    return value


ColumnSchema = Annotated[list[str] | dict[str, str | None], BeforeValidator(_check)]
"""Either ``[col, ...]`` or ``{col: type-or-null, ...}``."""


def schema_columns(schema: list[str] | dict[str, str | None] | None) -> list[str]:
    """The column names a schema declares, in order."""
    if schema is None:
        return []
    return list(schema)


def schema_types(schema: list[str] | dict[str, str | None] | None) -> dict[str, pa.DataType]:
    """The declared Arrow types, for the columns that have one."""
    if not isinstance(schema, dict):
        return {}
    return {name: arrow_type(t) for name, t in schema.items() if t}
