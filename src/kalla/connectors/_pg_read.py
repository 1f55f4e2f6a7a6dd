"""Reading one PostgreSQL table into Parquet staging files: one snapshot, parallel block ranges.

Why this shape:

* **One snapshot.** A coordinator connection opens a ``REPEATABLE READ READ ONLY``
  transaction, reads the catalog and exports its snapshot (``pg_export_snapshot()``); every
  partition connection imports it (``SET TRANSACTION SNAPSHOT``) before its first query, so
  all partitions see the same table state however long the read takes. The coordinator
  stays open until every partition is done (an exported snapshot dies with its transaction).
* **Block ranges, not LIMIT/OFFSET.** Partitions are ``ctid`` ranges over the heap's pages
  (a TID range scan since PostgreSQL 14): each page is read once, no sort, no skipping. The
  last range is open-ended. Views and partitioned parents are read as one partition.
* **Bounded memory.** The driver (ADBC) streams ``COPY … TO STDOUT (FORMAT binary)`` into
  Arrow batches; each batch is converted to its exact type and appended to the partition's
  Parquet file, so memory is a few batches per partition whatever the table size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import (
    Cancelled,
    KallaError,
    PermissionDenied,
    SourceNotFound,
    SourceReadFailed,
    first_failure,
)
from ._pg_errors import PgSite, classify, driver_errors
from ._pg_filters import PgWhere
from ._pg_types import PgColumn, arrow_for, needs_probe, quote_ident, select_expr
from ._staging import staging_writer

__all__ = ["PgSession", "TableRead", "plan_ranges"]

#: Pages per partition below which splitting does not pay (64 MiB of heap at 8 KiB pages).
PAGES_PER_PARTITION = 8192

_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

_FIND_TABLE = """
SELECT c.oid::int8, c.relkind::text, n.nspname::text, c.relname::text,
       pg_catalog.has_any_column_privilege(c.oid, 'SELECT'),
       pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::int8
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
"""

_COLUMNS = """
SELECT a.attname::text, bt.typname::text, pg_catalog.format_type(bt.oid, NULL),
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, t.typtype = 'd'
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


class PgSession:
    """One driver connection holding one read-only repeatable-read transaction."""

    def __init__(self, dbapi: Any, conn_uri: str, site: PgSite) -> None:
        self.site = site
        with driver_errors(site, "connecting"):
            self._conn = dbapi.connect(conn_uri, autocommit=True)
            self.cursor = self._conn.cursor()

    def begin(self, snapshot: str | None = None) -> None:
        self.run(_BEGIN, doing="starting a read-only transaction")
        if snapshot is not None:
            # The id comes from pg_export_snapshot() (hex and dashes), never from a user.
            self.run(f"SET TRANSACTION SNAPSHOT '{snapshot}'", doing="importing the read snapshot")
        self.run("SET LOCAL TIME ZONE 'UTC'", doing="setting the time zone")

    def run(self, sql: str, params: Sequence[str] | None = None, *, doing: str) -> None:
        with driver_errors(self.site, doing):
            self.cursor.execute(sql, parameters=tuple(params) if params else None)

    def rows(
        self, sql: str, params: Sequence[str] | None = None, *, doing: str
    ) -> list[tuple[Any, ...]]:
        with driver_errors(self.site, doing):
            self.cursor.execute(sql, parameters=tuple(params) if params else None)
            return list(self.cursor.fetchall())

    def cancel(self) -> None:
        with suppress(Exception):
            self.cursor.adbc_cancel()

    def close(self) -> None:
        for thing in (getattr(self, "cursor", None), getattr(self, "_conn", None)):
            if thing is not None:
                with suppress(Exception):
                    thing.close()


def plan_ranges(pages: int, partitions: int) -> list[tuple[int, int | None]]:
    """``partitions`` page ranges ``[start, end)`` covering ``[0, pages)``; the last is open-ended."""
    n = max(1, min(partitions, pages))
    bounds = [pages * i // n for i in range(n)] + [None]
    return [(bounds[i], bounds[i + 1]) for i in range(n)]  # type: ignore[misc]


@dataclass
class _Table:
    oid: int
    relkind: str
    qualified: str
    pages: int


class TableRead:
    """Reads ``schema.table`` (filtered) into Parquet files under ``staging_dir``."""

    def __init__(
        self,
        *,
        dbapi: Any,
        conn_uri: str,
        site: PgSite,
        schema: str,
        table: str,
        alias: str,
        declared: dict[str, pa.DataType],
        partitions: int | None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.dbapi = dbapi
        self.cancel = cancel or threading.Event()
        self.conn_uri = conn_uri
        self.site = site
        self.schema = schema
        self.table = table
        self.alias = alias
        self.declared = declared
        self.partitions = partitions

    # -- catalog ---------------------------------------------------------------------------
    def _find_table(self, s: PgSession) -> _Table:
        candidates = [(self.schema, self.table)]
        folded = (self.schema.lower(), self.table.lower())
        if folded != candidates[0]:
            candidates.append(folded)  # what PostgreSQL does with an unquoted name
        for schema, table in candidates:
            found = s.rows(_FIND_TABLE, (schema, table), doing="looking up the table")
            if found:
                oid, relkind, nsp, rel, readable, pages = found[0]
                if not readable:
                    raise PermissionDenied(
                        f"{self.site.prefix()}: the connecting role may not SELECT from it",
                        **self.site.details(),
                    )
                return _Table(
                    int(oid), relkind, f"{quote_ident(nsp)}.{quote_ident(rel)}", int(pages or 0)
                )
        raise SourceNotFound(
            f"{self.site.prefix()}: no such table or view (schema {self.schema!r}, table {self.table!r})",
            **self.site.details(),
        )

    def columns(self, s: PgSession, oid: int) -> dict[str, PgColumn]:
        rows = s.rows(_COLUMNS, (str(oid),), doing="reading the column types")
        return {r[0]: PgColumn(r[0], r[1], r[2], int(r[3]), bool(r[4])) for r in rows}

    def _decimal_types(
        self, s: PgSession, cols: dict[str, PgColumn], table: _Table, where: PgWhere
    ) -> dict[str, pa.Decimal128Type]:
        """Decimal types for ``numeric`` columns without a usable declared precision."""
        out: dict[str, pa.Decimal128Type] = {}
        probe: list[PgColumn] = []
        for c in cols.values():
            if not needs_probe(c):
                continue
            declared = self.declared.get(c.name)
            if isinstance(declared, pa.Decimal128Type):
                out[c.name] = declared
            else:
                probe.append(c)
        if not probe:
            return out
        parts = []
        for c in probe:
            q = quote_ident(c.name)
            parts.append(
                f"max(pg_catalog.scale({q})), "
                f"(max(abs({q})) FILTER (WHERE pg_catalog.scale({q}) IS NOT NULL))::text"
            )
        sql = f"SELECT {', '.join(parts)} FROM {table.qualified} WHERE {where.sql}"
        row = s.rows(sql, doing="measuring unconstrained numeric columns")[0]
        for i, c in enumerate(probe):
            scale, biggest = row[2 * i], row[2 * i + 1]
            if biggest is None:  # no numbers at all: any exact type will do
                out[c.name] = pa.decimal128(38, 10)
                continue
            scale = max(int(scale or 0), 0)
            int_digits = len(str(int(Decimal(biggest))))
            if int_digits + scale > 38:
                raise SourceReadFailed(
                    f"{self.site.prefix()}: numeric column {c.name!r} holds values with "
                    f"{int_digits} integer and {scale} fractional digits, more than the 38 an "
                    "exact decimal can hold; declare a narrower type in the source schema",
                    column=c.name,
                    **self.site.details(),
                )
            out[c.name] = pa.decimal128(38, scale)
        return out

    # -- reading ---------------------------------------------------------------------------
    def run(
        self, where_for: Callable[[dict[str, PgColumn]], PgWhere], staging_dir: Path
    ) -> list[str]:
        """Read into ``staging_dir``; ``where_for(columns)`` builds the filter once types are known."""
        staging_dir.mkdir(parents=True, exist_ok=True)
        coord = PgSession(self.dbapi, self.conn_uri, self.site)
        try:
            table, cols, where = self._open(coord, where_for)
            decimals = self._decimal_types(coord, cols, table, where)
            target = pa.schema(
                [pa.field(c.name, arrow_for(c, decimals.get(c.name))) for c in cols.values()]
            )
            exprs = ", ".join(select_expr(c) for c in cols.values())
            base_sql = f"SELECT {exprs} FROM {table.qualified} WHERE {where.sql}"

            n = self._partition_count(table)
            if n == 1:
                path = staging_dir / f"{self.alias}_part000.parquet"
                _stream(coord, base_sql, path, target, self.site, self.cancel)
                return [str(path)]
            snapshot = coord.rows(
                "SELECT pg_catalog.pg_export_snapshot()", doing="exporting the snapshot"
            )[0][0]
            ranges = plan_ranges(table.pages, n)
            return self._parallel(snapshot, base_sql, where, ranges, target, staging_dir)
        finally:
            coord.close()

    def preview(self, where_for: Callable[[dict[str, PgColumn]], PgWhere], limit: int) -> pa.Table:
        """The first ``limit`` rows passing the filter: ``SELECT … WHERE … LIMIT n``, one query.

        Unconstrained ``numeric`` columns (no declared type) are read as text and given the
        exact decimal type their previewed values need, so nothing scans the whole table.
        """
        s = PgSession(self.dbapi, self.conn_uri, self.site)
        try:
            table, cols, where = self._open(s, where_for)
            measured = [
                c.name for c in cols.values()
                if needs_probe(c) and not isinstance(self.declared.get(c.name), pa.Decimal128Type)
            ]  # fmt: skip
            fields = []
            for c in cols.values():
                declared = self.declared.get(c.name)
                decimal = declared if isinstance(declared, pa.Decimal128Type) else None
                kind = pa.string() if c.name in measured else arrow_for(c, decimal)
                fields.append(pa.field(c.name, kind))
            exprs = [select_expr(c) for c in cols.values()]
            target = pa.schema(fields)
            sql = (
                f"SELECT {', '.join(exprs)} FROM {table.qualified} WHERE {where.sql} "
                f"LIMIT {int(limit)}"
            )
            batches = [_convert(b, target, self.site) for b in _batches(s, sql, self.site)]
            result = pa.Table.from_batches(batches, schema=target)
            for name in measured:
                i = result.schema.get_field_index(name)
                column = _exact_decimal(result.column(name).combine_chunks(), name, self.site)
                result = result.set_column(i, pa.field(name, column.type), column)
            return result
        finally:
            s.close()

    def _open(
        self, s: PgSession, where_for: Callable[[dict[str, PgColumn]], PgWhere]
    ) -> tuple[_Table, dict[str, PgColumn], PgWhere]:
        """Begin the read-only transaction; find the table, its columns and the checked filter."""
        s.begin()
        table = self._find_table(s)
        cols = self.columns(s, table.oid)
        where = where_for(cols)
        self._bind(s, where)
        for what, sql in where.checks:
            with driver_errors(self.site, repr(what), filter_values=True):
                s.cursor.execute(sql)
                s.cursor.fetchall()
        return table, cols, where

    def _partition_count(self, table: _Table) -> int:
        if table.relkind not in ("r", "m") or table.pages == 0:
            return 1
        if self.partitions is not None:
            return max(1, min(self.partitions, table.pages))
        return max(1, min(os.cpu_count() or 1, -(-table.pages // PAGES_PER_PARTITION)))

    @staticmethod
    def _bind(s: PgSession, where: PgWhere) -> None:
        sql = where.set_config_sql()
        if sql is not None:
            s.rows(sql, where.set_config_params(), doing="binding the filter values")

    def _parallel(
        self,
        snapshot: str,
        base_sql: str,
        where: PgWhere,
        ranges: list[tuple[int, int | None]],
        target: pa.Schema,
        staging_dir: Path,
    ) -> list[str]:
        stop = threading.Event()  # one partition failed: the others stop
        paths = [staging_dir / f"{self.alias}_part{i:03d}.parquet" for i in range(len(ranges))]

        def one(i: int) -> None:
            start, end = ranges[i]
            cond = f" AND ctid >= '({start},0)'::tid"
            if end is not None:
                cond += f" AND ctid < '({end},0)'::tid"
            s = PgSession(self.dbapi, self.conn_uri, self.site)
            try:
                s.begin(snapshot)
                self._bind(s, where)
                _stream(s, base_sql + cond, paths[i], target, self.site, stop, self.cancel)
            except BaseException:
                stop.set()
                raise
            finally:
                s.close()

        with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="kalla-pg") as pool:
            futures = [pool.submit(one, i) for i in range(len(ranges))]
            first = first_failure([f.exception() for f in futures])
        if first is not None:
            raise first
        return [str(p) for p in paths]


def _batches(s: PgSession, sql: str, site: PgSite, *stops: threading.Event) -> Iterator[Any]:
    """Run ``sql`` and yield its Arrow batches as the driver decodes them.

    Stops with :class:`Cancelled` (and cancels the query) as soon as any of ``stops`` is set.
    """
    with driver_errors(site, "starting the read"):
        s.cursor.execute(sql)
        reader = s.cursor.fetch_record_batch()
    while True:
        if any(stop.is_set() for stop in stops):
            s.cancel()
            raise Cancelled(
                f"{site.prefix()}: read stopped (another read failed, or the run was cancelled)"
            )
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except KallaError:
            raise
        except Exception as exc:
            raise classify(exc, site, doing="reading rows") from exc


def _stream(
    s: PgSession,
    sql: str,
    path: Path,
    target: pa.Schema,
    site: PgSite,
    *stops: threading.Event,
) -> None:
    """Run ``sql`` and append its batches, converted to ``target``, to one Parquet file."""
    with staging_writer(path, target) as writer:
        for batch in _batches(s, sql, site, *stops):
            writer.write_batch(_convert(batch, target, site))


def _exact_decimal(values: pa.Array, name: str, site: PgSite) -> pa.Array:
    """Text of ``numeric`` values as the narrowest exact ``decimal128(38, s)`` that holds them."""
    present = values.drop_null()
    scale, digits = 0, 1
    for text in present.to_pylist():
        try:
            exponent = Decimal(text).as_tuple().exponent
            whole = len(str(abs(int(Decimal(text)))))
        except (ArithmeticError, ValueError):
            raise SourceReadFailed(
                f"{site.prefix()}: numeric column {name!r} holds {text!r}, which has no exact "
                "decimal form",
                column=name,
                **site.details(),
            ) from None
        if isinstance(exponent, int):
            scale = max(scale, -exponent)
        digits = max(digits, whole)
    if digits + scale > 38:
        raise SourceReadFailed(
            f"{site.prefix()}: numeric column {name!r} holds values with {digits} integer and "
            f"{scale} fractional digits, more than the 38 an exact decimal can hold; declare a "
            "narrower type in the source schema",
            column=name,
            **site.details(),
        )
    return pc.cast(values, pa.decimal128(38, scale))


def _convert(batch: pa.RecordBatch, target: pa.Schema, site: PgSite) -> pa.RecordBatch:
    arrays = []
    for i, field in enumerate(target):
        arr = batch.column(i)
        if isinstance(arr.type, pa.ExtensionType) or hasattr(arr, "storage"):
            arr = arr.storage
        if arr.type != field.type:
            try:
                arr = pc.cast(arr, field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SourceReadFailed(
                    f"{site.prefix()}: column {field.name!r} has a value that is not an exact "
                    f"{field.type}: {exc}",
                    column=field.name,
                    **site.details(),
                ) from exc
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=target)
