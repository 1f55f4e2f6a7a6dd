"""Source filters as a PostgreSQL ``WHERE`` clause whose values are bound, never spliced.

Values travel only as bound parameters of ``SELECT set_config($1, $2, true)``: each one
becomes a transaction-local setting ``kalla.fN_M``, and the WHERE clause reads it back as
``(SELECT current_setting('kalla.fN_M')::TYPE)`` — a one-off InitPlan, cast to the column's
own type so numbers compare as numbers and dates as dates. The big query itself then has no
parameters, which keeps the driver on its streaming ``COPY`` path (with parameters it
buffers the whole result in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ..errors import FilterInvalid
from ..job import FilterCondition, FilterOp
from ._pg_types import TEXT_TYPES, PgColumn, quote_ident

__all__ = ["PgWhere", "build_where"]


@dataclass(frozen=True)
class PgWhere:
    """A WHERE clause (``"TRUE"`` when unfiltered) and the settings it reads."""

    sql: str
    settings: list[tuple[str, str]]  # (setting name, value as text)
    checks: list[tuple[str, str]]  # (what the filter is, a SELECT that casts its values)

    def set_config_sql(self) -> str | None:
        """``SELECT set_config($1,$2,true), …`` binding every value; ``None`` if none."""
        if not self.settings:
            return None
        calls = ", ".join(
            f"pg_catalog.set_config(${2 * i + 1}, ${2 * i + 2}, true)"
            for i in range(len(self.settings))
        )
        return f"SELECT {calls}"

    def set_config_params(self) -> tuple[str, ...]:
        return tuple(x for pair in self.settings for x in pair)


def _text(value: int | Decimal | str) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def build_where(
    filters: list[FilterCondition], columns: dict[str, PgColumn], *, alias: str, table: str
) -> PgWhere:
    """The WHERE clause for ``filters``; ``FilterInvalid`` for unknown columns or misfits."""
    clauses: list[str] = []
    settings: list[tuple[str, str]] = []
    checks: list[tuple[str, str]] = []
    for n, f in enumerate(filters):
        col = columns.get(f.column)
        if col is None:
            raise FilterInvalid(
                f"source {alias!r}: filter on unknown column {f.column!r} of table {table}; "
                f"columns are: {', '.join(columns)}",
                alias=alias,
                column=f.column,
            )
        values = f.value if isinstance(f.value, list) else [f.value]
        params = []
        for m, v in enumerate(values):
            name = f"kalla.f{n}_{m}"
            settings.append((name, _text(v)))
            cast = "" if f.op is FilterOp.LIKE else f"::{col.sql_type}"
            params.append(f"(SELECT pg_catalog.current_setting('{name}'){cast})")
        ident = quote_ident(col.name)
        if f.op.comparison is not None:
            clause = f"{ident} {f.op.comparison} {params[0]}"
        elif f.op is FilterOp.BETWEEN:
            clause = f"{ident} BETWEEN {params[0]} AND {params[1]}"
        elif f.op is FilterOp.IN:
            clause = f"{ident} IN ({', '.join(params)})"
        else:  # LIKE
            if col.typname not in TEXT_TYPES:
                raise FilterInvalid(
                    f"source {alias!r}: 'like' needs a text column, but {f.column!r} of table "
                    f"{table} is {col.sql_type}",
                    alias=alias,
                    column=f.column,
                )
            clause = f"{ident}::text LIKE {params[0]}"
        clauses.append(f"({clause})")
        checks.append((f"{f.column} {f.op.value} {f.value!r}", f"SELECT {', '.join(params)}"))
    return PgWhere(" AND ".join(clauses) or "TRUE", settings, checks)
