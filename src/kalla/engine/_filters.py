"""Source filters applied by DataFusion, typed by the column they compare against."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FilterInvalid
from ..job import FilterCondition, FilterOp
from ..sql import quote

__all__ = ["filter_sql"]


def _sql_type(t: pa.DataType) -> str | None:
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    return None


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _literal(value: object, column: str, t: pa.DataType, alias: str) -> str:
    text = str(value)
    if _is_text(t):
        return "'" + text.replace("'", "''") + "'"
    sql_type = _sql_type(t)
    if sql_type is None:
        raise FilterInvalid(f"source {alias!r}: cannot filter on column {column!r} of type {t}")
    probe = pa.array([text])
    try:
        if pa.types.is_boolean(t):
            if text.lower() not in ("true", "false"):
                raise pa.ArrowInvalid(text)
        else:
            pc.cast(probe, t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise FilterInvalid(
            f"source {alias!r}: filter value {value!r} does not fit column {column!r} ({t})",
            column=column,
        ) from None
    return f"CAST('{text}' AS {sql_type})"


def filter_sql(filters: list[FilterCondition], schema: pa.Schema, alias: str) -> str | None:
    """A SQL predicate for ``filters`` (ANDed), or ``None`` when there are none."""
    parts = []
    for f in filters:
        if f.column not in schema.names:
            raise FilterInvalid(
                f"source {alias!r}: filter column {f.column!r} does not exist; "
                f"columns are {schema.names}",
                column=f.column,
            )
        t = schema.field(f.column).type
        col = quote(f.column)
        if f.op is FilterOp.LIKE:
            if not _is_text(t):
                raise FilterInvalid(
                    f"source {alias!r}: 'like' needs a text column; {f.column!r} is {t}"
                )
            parts.append(f"{col} LIKE {_literal(f.value, f.column, t, alias)}")
        elif f.op is FilterOp.BETWEEN:
            low, high = f.value  # type: ignore[misc,str-unpack]
            parts.append(
                f"{col} BETWEEN {_literal(low, f.column, t, alias)} AND {_literal(high, f.column, t, alias)}"
            )
        elif f.op is FilterOp.IN:
            items = ", ".join(_literal(v, f.column, t, alias) for v in f.value)  # type: ignore[union-attr]
            parts.append(f"{col} IN ({items})")
        else:
            parts.append(f"{col} {f.op.comparison} {_literal(f.value, f.column, t, alias)}")
    return " AND ".join(f"({p})" for p in parts) if parts else None
