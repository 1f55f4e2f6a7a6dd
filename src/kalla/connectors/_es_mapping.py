"""Elasticsearch index mappings as exact Arrow columns; documents as Arrow batches; filters as
query DSL.

Columns come from the mapping, never from sampling documents: nested objects are flattened
to dotted names (``customer.address.city``), ``_id`` is always the first column. Types:

===========================================  ==========================================
mapping type                                 Arrow
===========================================  ==========================================
keyword, constant_keyword, wildcard, text,   string
match_only_text, ip, version, binary (b64)
long, integer, short, byte                   int64
unsigned_long                                decimal128(20, 0)
double, float, half_float                    float64
scaled_float, scaling_factor 10^k            decimal128(38, k) (the value ES indexes)
date / date_nanos                            timestamp[us, UTC] / timestamp[ns, UTC]
boolean                                      bool
anything else (nested, flattened, geo_*, …)  string (its JSON text)
===========================================  ==========================================

Filters are pushed into the query only where Elasticsearch compares exactly as the engine
would (keyword, integer, double, date, boolean fields and ``_id`` equality); the others are
left to the engine (the connector then reports ``filters_applied=False``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from ..errors import FilterInvalid, SourceReadFailed
from ..job import FilterCondition, FilterOp

__all__ = ["EsColumn", "EsQuery", "build_query", "columns_from_mapping", "hits_to_batch"]

_STRING = {"keyword", "constant_keyword", "wildcard", "text", "match_only_text", "ip", "version",
           "binary", "search_as_you_type", "semantic_text"}  # fmt: skip
_INTEGER = {"long", "integer", "short", "byte"}
_FLOAT = {"double", "float", "half_float"}
_EXACT_STRING = {"keyword", "constant_keyword", "wildcard"}
_RANGE = {FilterOp.GT: "gt", FilterOp.GTE: "gte", FilterOp.LT: "lt", FilterOp.LTE: "lte"}


@dataclass(frozen=True)
class EsColumn:
    """One column: its dotted name, the mapping type and the Arrow type it is read as."""

    name: str
    es_type: str
    arrow: pa.DataType
    scale: int | None = None  # decimal places of a scaled_float

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))


def _scaled(spec: dict[str, Any]) -> tuple[pa.DataType, int | None]:
    factor = float(spec.get("scaling_factor", 1))
    k = round(math.log10(factor)) if factor > 0 else -1
    if k >= 0 and 10**k == factor and k <= 18:
        return pa.decimal128(38, k), k
    return pa.float64(), None  # a factor that is not a power of ten has no exact decimal


def _column(name: str, spec: dict[str, Any]) -> EsColumn:
    kind = spec.get("type", "object")
    if kind in _STRING:
        return EsColumn(name, kind, pa.string())
    if kind in _INTEGER:
        return EsColumn(name, kind, pa.int64())
    if kind == "unsigned_long":
        return EsColumn(name, kind, pa.decimal128(20, 0), 0)
    if kind in _FLOAT:
        return EsColumn(name, kind, pa.float64())
    if kind == "scaled_float":
        arrow, scale = _scaled(spec)
        return EsColumn(name, kind, arrow, scale)
    if kind == "date":
        return EsColumn(name, kind, pa.timestamp("us", tz="UTC"))
    if kind == "date_nanos":
        return EsColumn(name, kind, pa.timestamp("ns", tz="UTC"))
    if kind == "boolean":
        return EsColumn(name, kind, pa.bool_())
    return EsColumn(name, kind, pa.string())


def _walk(properties: dict[str, Any], prefix: str, out: dict[str, EsColumn]) -> None:
    for key, spec in properties.items():
        name = f"{prefix}{key}"
        kind = spec.get("type")
        if kind == "alias":
            continue  # an alias field has no value of its own in _source
        if "properties" in spec and kind in (None, "object"):
            if spec.get("enabled", True) is False:
                out.setdefault(name, EsColumn(name, "object", pa.string()))
            else:
                _walk(spec["properties"], f"{name}.", out)
            continue
        column = _column(name, spec)
        known = out.get(name)
        if known is not None and known.arrow != column.arrow:
            column = EsColumn(name, "mixed", pa.string())  # indices disagree: keep the text
        out[name] = column


def columns_from_mapping(mapping: dict[str, Any]) -> dict[str, EsColumn]:
    """Columns of a ``GET INDEX/_mapping`` answer (several indices are merged)."""
    out: dict[str, EsColumn] = {"_id": EsColumn("_id", "_id", pa.string())}
    for index in sorted(mapping):
        props = mapping[index].get("mappings", {}).get("properties", {})
        _walk(props, "", out)
    return out


# --- documents -> Arrow ---------------------------------------------------------------------


def _lookup(source: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path``; documents may also hold dotted keys (``{"a.b": 1}``)."""
    if not path:
        return source
    if not isinstance(source, dict):
        return None
    for i in range(len(path), 0, -1):
        key = ".".join(path[:i])
        if key in source:
            return _lookup(source[key], path[i:])
    return None


def _timestamp(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    text = str(value)
    if text.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"{value!r} is not a boolean")


def _convert(col: EsColumn, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) == 1 and col.arrow != pa.string():
            value = value[0]
        elif len(value) == 0:
            return None
        elif col.arrow != pa.string():
            raise ValueError("holds several values; only a text column can hold an array")
    if pa.types.is_string(col.arrow):
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if pa.types.is_int64(col.arrow):
        number = Decimal(str(value))
        if number != number.to_integral_value():
            raise ValueError(f"{value!r} is not a whole number")
        return int(number)
    if pa.types.is_float64(col.arrow):
        return float(value)
    if pa.types.is_decimal(col.arrow):
        exponent = Decimal(1).scaleb(-(col.scale or 0))
        # What Elasticsearch indexes for a scaled_float: the value rounded to the factor.
        return Decimal(str(value)).quantize(exponent, rounding=ROUND_HALF_UP)
    if pa.types.is_timestamp(col.arrow):
        return _timestamp(value)
    if pa.types.is_boolean(col.arrow):
        return _bool(value)
    return str(value)


def hits_to_batch(
    hits: list[dict[str, Any]], columns: list[EsColumn], schema: pa.Schema, *, where: str
) -> pa.RecordBatch:
    """One search page as a record batch of ``schema`` (``columns`` in the same order)."""
    data: list[list[Any]] = [[] for _ in columns]
    for hit in hits:
        source = hit.get("_source") or {}
        for values, col in zip(data, columns, strict=True):
            raw = hit.get("_id") if col.name == "_id" else _lookup(source, col.path)
            try:
                values.append(_convert(col, raw))
            except (ValueError, TypeError, InvalidOperation, OverflowError) as exc:
                raise SourceReadFailed(
                    f"{where}: field {col.name!r} ({col.es_type}) of document {hit.get('_id')!r} "
                    f"does not fit {col.arrow}: {exc}",
                    column=col.name,
                ) from exc
    arrays = []
    for values, field in zip(data, schema, strict=True):
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise SourceReadFailed(
                f"{where}: field {field.name!r} does not fit {field.type}: {str(exc)[:200]}",
                column=field.name,
            ) from exc
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# --- filters -> query DSL -------------------------------------------------------------------


@dataclass(frozen=True)
class EsQuery:
    """The search query, and whether every job filter is inside it."""

    query: dict[str, Any]
    complete: bool


def _value(col: EsColumn, value: int | Decimal | str, where: str) -> Any:
    text = format(value, "f") if isinstance(value, Decimal) else str(value)
    try:
        if col.es_type in _INTEGER:
            number = Decimal(text)
            if number != number.to_integral_value():
                raise ValueError("not a whole number")
            return int(number)
        if col.es_type == "double":
            return float(text)
        if col.es_type == "boolean":
            return _bool(text)
        if col.es_type in ("date", "date_nanos"):
            _timestamp(text)  # validates; ES parses the text itself
            return text
    except (ValueError, InvalidOperation) as exc:
        raise FilterInvalid(
            f"{where}: value {text!r} does not fit field {col.name!r} ({col.es_type})",
            column=col.name,
        ) from exc
    return text


def _like_to_wildcard(pattern: str) -> str:
    out = []
    escaped = False
    for ch in pattern:
        if escaped:
            out.append("\\" + ch if ch in "*?\\" else ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append("*")
        elif ch == "_":
            out.append("?")
        elif ch in "*?":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _pushable(col: EsColumn) -> bool:
    return col.es_type in _EXACT_STRING | _INTEGER | {"double", "date", "date_nanos", "boolean"}


def build_query(
    filters: list[FilterCondition],
    columns: dict[str, EsColumn],
    base: dict[str, Any] | None,
    *,
    alias: str,
    index: str,
) -> EsQuery:
    """``base`` (the URI's query) AND every filter Elasticsearch can apply exactly."""
    must: list[dict[str, Any]] = [base] if base else []
    must_not: list[dict[str, Any]] = []
    complete = True
    for f in filters:
        col = columns.get(f.column)
        where = f"source {alias!r}: filter {f.column} {f.op.value} {f.value!r} on index {index}"
        if col is None:
            raise FilterInvalid(
                f"source {alias!r}: filter on unknown field {f.column!r} of index {index}; "
                f"fields are: {', '.join(columns)}",
                alias=alias,
                column=f.column,
            )
        if f.op is FilterOp.LIKE and not pa.types.is_string(col.arrow):
            raise FilterInvalid(
                f"source {alias!r}: 'like' needs a text field, but {f.column!r} of index "
                f"{index} is {col.es_type}",
                alias=alias,
                column=f.column,
            )
        values = f.value if isinstance(f.value, list) else [f.value]
        if col.name == "_id":
            if f.op in (FilterOp.EQ, FilterOp.IN):
                must.append({"ids": {"values": [str(v) for v in values]}})
            else:
                complete = False
            continue
        if not _pushable(col):
            complete = False
            continue
        vals = [_value(col, v, where) for v in values]
        field = col.name
        if f.op is FilterOp.EQ:
            must.append({"term": {field: vals[0]}})
        elif f.op is FilterOp.NEQ:
            # NULL <> x is not true in SQL: documents without the field do not pass.
            must.append({"exists": {"field": field}})
            must_not.append({"term": {field: vals[0]}})
        elif f.op in _RANGE:
            must.append({"range": {field: {_RANGE[f.op]: vals[0]}}})
        elif f.op is FilterOp.BETWEEN:
            must.append({"range": {field: {"gte": vals[0], "lte": vals[1]}}})
        elif f.op is FilterOp.IN:
            must.append({"terms": {field: vals}})
        else:  # LIKE on an exact string field
            must.append({"wildcard": {field: {"value": _like_to_wildcard(str(vals[0]))}}})
    if not must and not must_not:
        return EsQuery({"match_all": {}}, complete)
    query: dict[str, Any] = {"bool": {"filter": must}}
    if must_not:
        query["bool"]["must_not"] = must_not
    return EsQuery(query, complete)
