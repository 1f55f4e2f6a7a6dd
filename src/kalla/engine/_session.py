"""The engine: a DataFusion session with kalla's UDFs, and the only way in (seed D4).

Nothing outside this package touches a ``SessionContext``. Sources come in as
:class:`~kalla.connectors.TableSource` values (files, staged Parquet, objects on S3)
or Arrow data; SQL comes in through :mod:`kalla.sql`, which enforces read-only
queries and casts UDF arguments.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
from datafusion import DataFrame, RuntimeEnvBuilder, SessionConfig, SessionContext, SQLOptions

from ..connectors import ConnectorContext, ConnectorRegistry, TableSource, default_registry
from ..connectors._staging import staging_writer
from ..errors import JobInvalid, SchemaMismatch, TableNameInvalid
from ..evidence._store import dataset_rows
from ..job import FilterCondition, JobSource
from ..schema import ColumnSchema, schema_types
from ..side import Side
from ..sql import RESERVED_PREFIX, prepare_sql, quote
from . import _csv, _frames
from ._errors import translate
from ._filters import filter_sql
from ._udfs import UDFS

__all__ = ["Engine", "available_memory"]


def available_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable), or a safe guess."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Where a column of an ``on``/``keys`` list comes from: one name for both sides, or a pair.
ColumnPair = str | tuple[str, str]


class Engine:
    """A DataFusion session for one run (or one notebook): sources, UDFs, bounded memory.

    The engine owns its DataFusion session and never hands it out (seed D4): tables come
    in through ``register_uri`` (any connector, filters applied) and ``register_table``
    (Arrow, pyarrow datasets, pandas, polars); SQL goes through :meth:`sql` and
    :meth:`sql_stream`, which accept one read-only query and make kalla's financial
    functions (``tolerance_match``, ``date_within``, …) exact whatever the column types.

    ``memory_limit`` bounds what sorts, aggregates and joins hold, spilling to
    ``spill_dir``; with a limit, joins run as sort-merge joins, which can spill.

    Table names are plain identifiers. As in PostgreSQL, SQL folds unquoted names to
    lower case, so use lower-case names (or quote them in queries).

    Examples:
        >>> import pyarrow as pa
        >>> from kalla import Engine
        >>> with Engine() as engine:
        ...     _ = engine.register_table("t", pa.table({"a": [1, 2, 3]}))
        ...     engine.sql("SELECT sum(a) AS total FROM t").to_pylist()
        [{'total': 6}]
    """

    def __init__(
        self,
        *,
        memory_limit: int | None = None,
        spill_dir: str | Path | None = None,
        target_partitions: int | None = None,
    ) -> None:
        self.memory_limit = memory_limit
        partitions = target_partitions or os.cpu_count() or 2
        config = (
            SessionConfig()
            .with_target_partitions(partitions)
            .with_information_schema(False)
            .set("datafusion.sql_parser.parse_float_as_decimal", "true")
            .set("datafusion.execution.parquet.schema_force_view_types", "false")
            .set("datafusion.sql_parser.map_string_types_to_utf8view", "false")
        )
        runtime = RuntimeEnvBuilder()
        if memory_limit is not None:
            config = config.set("datafusion.optimizer.prefer_hash_join", "false").set(
                # Sorts reserve this much up front for merging spills; keep it in proportion.
                "datafusion.execution.sort_spill_reservation_bytes",
                str(min(10 << 20, memory_limit // 8)),
            )
            runtime = runtime.with_fair_spill_pool(memory_limit)
            runtime = (
                runtime.with_disk_manager_specified(str(spill_dir))
                if spill_dir is not None
                else runtime.with_disk_manager_os()
            )
        self._ctx = SessionContext(config, runtime)
        self._partitions = partitions
        for fn in UDFS():
            self._ctx.register_udf(fn)
        self._schemas: dict[str, pa.Schema] = {}
        self._staging: Path | None = None

    # --- the public API: registration ---------------------------------------------------------

    def register_uri(
        self,
        name: str,
        uri: str,
        *,
        filters: Sequence[FilterCondition | Mapping[str, Any]] = (),
        schema: ColumnSchema | None = None,
        options: Mapping[str, Any] | None = None,
        registry: ConnectorRegistry | None = None,
    ) -> pa.Schema:
        """Register the source at ``uri`` as table ``name``, through the connector registry.

        Files are scanned in place (CSV with kalla's exact type inference), PostgreSQL is
        read in one snapshot with the filters pushed into its ``WHERE``, S3 objects are read
        by DataFusion. Registering a name again replaces the table.

        Args:
            name: The table name queries use (letters, digits, underscores).
            uri: A path, ``file://``, ``postgresql://…?table=T``, ``s3://bucket/key`` or any
                scheme an installed connector handles.
            filters: Conditions applied to the source (``FilterCondition`` or dicts
                ``{"column", "op", "value"}``), ANDed.
            schema: Columns the source must have, optionally typed (as in a recipe).
            options: Connector options (``s3_settings``, ``postgres_partitions``, …).
            registry: The connector registry; default: every installed connector.

        Returns:
            The table's Arrow schema.

        Raises:
            UnsupportedUri: No connector handles the URI's scheme.
            MissingDependency: The connector's extra is not installed.
            SourceNotFound, SchemaMismatch, FilterInvalid, SourceReadFailed,
            ConnectionFailed, PermissionDenied: From the connector or the scan.
            TableNameInvalid: ``name`` is not a plain identifier.

        Examples:
            >>> import tempfile, pathlib
            >>> folder = pathlib.Path(tempfile.mkdtemp())
            >>> _ = (folder / "invoices.csv").write_text("id,amount\\nA,10.50\\nB,7.25\\n")
            >>> with Engine() as engine:
            ...     engine.register_uri(
            ...         "invoices", str(folder / "invoices.csv"),
            ...         filters=[{"column": "amount", "op": "gt", "value": "8"}],
            ...     )
            ...     engine.sql("SELECT id, amount FROM invoices").to_pylist()
            id: string
            amount: decimal128(18, 2)
            [{'id': 'A', 'amount': Decimal('10.50')}]
        """
        _check_name(name)
        try:
            source = JobSource(
                alias=name,
                uri=uri,
                filters=[FilterCondition.model_validate(f) for f in filters],
                schema=schema,
            )
        except ValueError as exc:
            raise JobInvalid(f"source {name!r}: {_first_error(exc)}") from None
        self._forget(name)
        staging = self._staging_dir() / name
        with translate(stage="staging", source=name):
            connector = (registry or default_registry()).for_uri(uri)
            connector.check(uri)
            table = connector.open(source, ConnectorContext(staging, dict(options or {})))
            declared = schema_types(source.schema_)
            base = name if table.filters_applied or not source.filters else _base_name(name)
            registered = self.register_source(
                base, table, declared=declared, staging_dir=staging,
                in_memory=self.fits_in_memory(table, staged_under=staging),
            )  # fmt: skip
            missing = [c for c in declared if c not in registered.names]
            if missing:
                raise SchemaMismatch(
                    f"source {name!r} is missing declared column(s) {missing}; "
                    f"it has {registered.names}",
                    missing=missing,
                )
            if base == name:
                return registered
            predicate = filter_sql(list(source.filters), registered, name)
            return self.register_view(name, f"SELECT * FROM {quote(base)} WHERE {predicate}")

    def register_table(self, name: str, data: _frames.ArrowLike) -> pa.Schema:
        """Register in-memory or lazy data as table ``name`` (replacing any table of that name).

        Args:
            name: The table name queries use (letters, digits, underscores).
            data: A ``pyarrow.Table``, ``RecordBatch`` or ``RecordBatchReader`` (read
                whole), a ``pyarrow.dataset.Dataset`` (scanned lazily), a pandas or polars
                DataFrame (neither is a kalla dependency), or any object with
                ``__arrow_c_stream__``.

        Returns:
            The table's Arrow schema.

        Raises:
            TableNameInvalid: ``name`` is not a plain identifier.
            TypeError: ``data`` is none of the accepted kinds.

        Examples:
            >>> import pyarrow as pa
            >>> with Engine() as engine:
            ...     engine.register_table("t", pa.table({"id": ["a"], "n": [1]}))
            id: string
            n: int64
        """
        _check_name(name)
        arrow = _frames.as_arrow(data)
        self._forget(name)
        if isinstance(arrow, pads.Dataset):
            with translate(stage="staging", source=name):
                self._ctx.register_dataset(name, arrow)
            self._schemas[name] = arrow.schema
            return arrow.schema
        return self.register_arrow(name, arrow.combine_chunks(), arrow.schema)

    def tables(self) -> list[str]:
        """Names of the tables registered through the public API, sorted.

        Examples:
            >>> import pyarrow as pa
            >>> with Engine() as engine:
            ...     _ = engine.register_table("b", pa.table({"x": [1]}))
            ...     _ = engine.register_table("a", pa.table({"x": [1]}))
            ...     engine.tables()
            ['a', 'b']
        """
        return sorted(n for n in self._schemas if not n.startswith(RESERVED_PREFIX))

    def deregister(self, name: str) -> None:
        """Forget table ``name`` (no error if there is none)."""
        self._forget(name)
        self._forget(_base_name(name))

    # --- the public API: queries --------------------------------------------------------------

    def sql(self, query: str) -> pa.Table:
        """Run one read-only query; the whole result as an Arrow table.

        kalla's financial functions are available and exact: ``tolerance_match``,
        ``pct_tolerance_match``, ``date_within``, ``normalize_ref``.

        Args:
            query: Exactly one ``SELECT`` or ``WITH`` query over the registered tables.

        Returns:
            The result.

        Raises:
            MatchSqlForbidden: The query is not one read-only query (DDL, DML, ``COPY``,
                ``SET``, several statements).
            MatchSqlInvalid: The query does not parse or plan (unknown table or column).
            ExecutionFailed, ResourcesExhausted: Running it failed.

        Examples:
            >>> import pyarrow as pa
            >>> with Engine() as engine:
            ...     _ = engine.register_table("t", pa.table({"a": [100.0], "b": [100.02]}))
            ...     engine.sql("SELECT tolerance_match(a, b, 0.02) AS ok FROM t").to_pylist()
            [{'ok': True}]
            >>> Engine().sql("DROP TABLE t")
            Traceback (most recent call last):
            ...
            kalla.errors.MatchSqlForbidden: query must be a read-only SELECT or WITH query, not a DROP statement
        """
        df = self._user_dataframe(query)
        with translate(stage="query", sql=True, what="query"):
            return df.to_arrow_table()

    def sql_stream(self, query: str) -> Iterator[pa.RecordBatch]:
        """Like :meth:`sql`, but yield the result batch by batch as DataFusion produces it.

        The query is checked and planned at once (errors raise here); it runs as the
        iterator is consumed, so memory holds a few batches, not the result.

        Examples:
            >>> import pyarrow as pa
            >>> with Engine() as engine:
            ...     _ = engine.register_table("t", pa.table({"a": list(range(10))}))
            ...     sum(b.num_rows for b in engine.sql_stream("SELECT a FROM t WHERE a > 3"))
            6
        """
        return _stream(self._user_dataframe(query))

    def to_pandas(self, query: str) -> Any:
        """:meth:`sql` as a pandas DataFrame; needs ``pip install 'kalla[pandas]'``.

        Raises:
            MissingDependency: pandas is not installed (``extra="pandas"``).
        """
        return _frames.to_pandas(self.sql(query))

    def to_polars(self, query: str) -> Any:
        """:meth:`sql` as a polars DataFrame; needs ``pip install 'kalla[polars]'``.

        Raises:
            MissingDependency: polars is not installed (``extra="polars"``).
        """
        return _frames.to_polars(self.sql(query))

    def execute_join(
        self,
        left: str,
        right: str,
        on: Sequence[ColumnPair],
        *,
        tolerance: Mapping[ColumnPair, Decimal | int | str] | None = None,
    ) -> pa.Table:
        """Inner-join two tables on equal keys, amounts optionally within a tolerance.

        Output columns are the left table's, then the right table's; a name both have is
        given its table as prefix (``invoices.amount``, ``payments.amount``).

        Args:
            left: Left table name.
            right: Right table name.
            on: Key columns that must be equal: a name both tables have, or a pair
                ``(left_column, right_column)``.
            tolerance: Columns that must agree within an absolute amount, exactly
                (``tolerance_match``): ``{"amount": "0.02"}`` or
                ``{("amount", "paid"): Decimal("0.02")}``.

        Returns:
            The joined rows.

        Raises:
            SchemaMismatch: A named column does not exist.
            JobInvalid: Neither ``on`` nor ``tolerance`` gives a condition, or a
                tolerance is not a non-negative number.

        Examples:
            >>> import pyarrow as pa
            >>> from decimal import Decimal as D
            >>> with Engine() as engine:
            ...     _ = engine.register_table("inv", pa.table({"ref": ["A", "B"], "amount": [D("10.00"), D("5.00")]}))
            ...     _ = engine.register_table("pay", pa.table({"ref": ["A", "B"], "paid": [D("10.01"), D("4.00")]}))
            ...     engine.execute_join("inv", "pay", on=["ref"], tolerance={("amount", "paid"): "0.02"}).to_pylist()
            [{'inv.ref': 'A', 'amount': Decimal('10.00'), 'pay.ref': 'A', 'paid': Decimal('10.01')}]
        """
        df = self._join_dataframe(left, right, on, tolerance)
        with translate(stage="query"):
            return df.to_arrow_table()

    def execute_join_stream(
        self,
        left: str,
        right: str,
        on: Sequence[ColumnPair],
        *,
        tolerance: Mapping[ColumnPair, Decimal | int | str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """:meth:`execute_join`, yielding record batches as they are produced."""
        return _stream(self._join_dataframe(left, right, on, tolerance))

    def find_orphans(
        self, side: Side, left: str, right: str, keys: Sequence[ColumnPair]
    ) -> pa.Table:
        """Rows of one side's table with no row of the other table on equal keys.

        An anti-join on the full key; a row with a NULL in its key is always an orphan
        (NULL equals nothing), as in a reconciliation run.

        Args:
            side: Whose orphans: ``Side.LEFT`` (rows of ``left``) or ``Side.RIGHT``.
            left: Left table name.
            right: Right table name.
            keys: Key columns: a name both tables have, or a pair
                ``(left_column, right_column)``.

        Returns:
            The orphan rows, with all of their table's columns.

        Raises:
            SchemaMismatch: A key column does not exist.
            JobInvalid: ``keys`` is empty.
            TypeError: ``side`` is not a :class:`~kalla.Side`.

        Examples:
            >>> import pyarrow as pa
            >>> from kalla import Side
            >>> with Engine() as engine:
            ...     _ = engine.register_table("inv", pa.table({"id": ["A", "B", None]}))
            ...     _ = engine.register_table("pay", pa.table({"ref": ["A", "C"]}))
            ...     engine.find_orphans(Side.LEFT, "inv", "pay", [("id", "ref")]).to_pylist()
            ...     engine.find_orphans(Side.RIGHT, "inv", "pay", [("id", "ref")]).to_pylist()
            [{'id': 'B'}, {'id': None}]
            [{'ref': 'C'}]
        """
        df = self._orphans_dataframe(side, left, right, keys)
        with translate(stage="query"):
            return df.to_arrow_table()

    def find_orphans_stream(
        self, side: Side, left: str, right: str, keys: Sequence[ColumnPair]
    ) -> Iterator[pa.RecordBatch]:
        """:meth:`find_orphans`, yielding record batches as they are produced."""
        return _stream(self._orphans_dataframe(side, left, right, keys))

    # --- the public API: helpers ---------------------------------------------------------------

    def _user_dataframe(self, query: str) -> DataFrame:
        tables = {n: {f.name: f.type for f in sch} for n, sch in self._schemas.items()}
        prepared = prepare_sql(query, tables, what="query")
        options = (
            SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
        )
        with translate(stage="query", sql=True, what="query"):
            return self._ctx.sql_with_options(prepared, options)

    def _table(self, name: str) -> pa.Schema:
        if name not in self._schemas or name.startswith(RESERVED_PREFIX):
            raise SchemaMismatch(
                f"no table {name!r} is registered; tables: {', '.join(self.tables()) or 'none'}"
            )
        return self._schemas[name]

    def _pairs(
        self, pairs: Sequence[ColumnPair], left: str, right: str, what: str
    ) -> list[tuple[str, str]]:
        out = []
        schemas = (self._table(left), self._table(right))
        for item in pairs:
            pair = (item, item) if isinstance(item, str) else tuple(item)
            if len(pair) != 2:
                raise JobInvalid(f"{what}: {item!r} is neither a column name nor a pair of them")
            for table, schema, column in zip((left, right), schemas, pair, strict=True):
                if column not in schema.names:
                    raise SchemaMismatch(
                        f"{what}: table {table!r} has no column {column!r}; it has {schema.names}",
                        column=column,
                    )
            out.append((pair[0], pair[1]))
        return out

    def _join_dataframe(
        self,
        left: str,
        right: str,
        on: Sequence[ColumnPair],
        tolerance: Mapping[ColumnPair, Decimal | int | str] | None,
    ) -> DataFrame:
        keys = self._pairs(on, left, right, "execute_join on")
        tol = self._pairs(list((tolerance or {}).keys()), left, right, "execute_join tolerance")
        amounts = [_tolerance(v) for v in (tolerance or {}).values()]
        if not keys and not tol:
            raise JobInvalid("execute_join needs at least one key in 'on' or one tolerance")
        conditions = [f"l.{quote(a)} = r.{quote(b)}" for a, b in keys]
        conditions += [
            f"tolerance_match(l.{quote(a)}, r.{quote(b)}, {amount})"
            for (a, b), amount in zip(tol, amounts, strict=True)
        ]
        lnames, rnames = self._schemas[left].names, self._schemas[right].names
        lq, rq = (left, right) if left != right else ("left", "right")
        cols = [f"l.{quote(c)} AS {quote(f'{lq}.{c}' if c in rnames else c)}" for c in lnames] + [
            f"r.{quote(c)} AS {quote(f'{rq}.{c}' if c in lnames else c)}" for c in rnames
        ]
        query = (
            f"SELECT {', '.join(cols)} FROM {quote(left)} AS l JOIN {quote(right)} AS r "
            f"ON {' AND '.join(conditions)}"
        )
        tables = {n: {f.name: f.type for f in self._schemas[n]} for n in (left, right)}
        with translate(stage="query"):
            return self._ctx.sql(prepare_sql(query, tables, what="execute_join"))

    def _orphans_dataframe(
        self, side: Side, left: str, right: str, keys: Sequence[ColumnPair]
    ) -> DataFrame:
        if not isinstance(side, Side):
            raise TypeError(f"side must be Side.LEFT or Side.RIGHT, not {side!r}")
        pairs = self._pairs(keys, left, right, "find_orphans keys")
        if not pairs:
            raise JobInvalid("find_orphans needs at least one key column")
        if side is Side.RIGHT:
            left, right = right, left
            pairs = [(b, a) for a, b in pairs]
        cond = " AND ".join(f"o.{quote(a)} = x.{quote(b)}" for a, b in pairs)
        query = (
            f"SELECT o.* FROM {quote(left)} AS o "
            f"WHERE NOT EXISTS (SELECT 1 FROM {quote(right)} AS x WHERE {cond})"
        )
        with translate(stage="query"):
            return self._ctx.sql(query)

    def _staging_dir(self) -> Path:
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="kalla-engine-"))
        return self._staging

    def fits_in_memory(self, table: TableSource, staged_under: Path | None = None) -> bool:
        """Whether to hold ``table`` as Arrow in memory: local files, well within the budget.

        CSV qualifies by size (one parse instead of several). Parquet is otherwise scanned
        lazily, each pass reading only the columns it needs; only what a connector staged
        (files under ``staged_under``) is read once into memory instead.
        """
        if table.object_store is not None:
            return False
        if table.format == "parquet" and (
            staged_under is None
            or not all(Path(p).is_relative_to(staged_under) for p in table.paths)
        ):
            return False
        size = sum(os.path.getsize(p) for p in table.paths)
        # Arrow in memory: about 2x a CSV file's size, up to ~8x a compressed Parquet file's.
        factor = 4 if table.format == "csv" else 16
        budget = self.memory_limit if self.memory_limit is not None else available_memory() // 2
        return size * factor < budget

    def _forget(self, name: str) -> None:
        if name in self._schemas:
            with contextlib.suppress(Exception):
                self._ctx.deregister_table(name)
            del self._schemas[name]

    # --- registration -----------------------------------------------------------------------

    def register_arrow(
        self, name: str, data: pa.Table | list[pa.RecordBatch], schema: pa.Schema | None = None
    ) -> pa.Schema:
        """Register in-memory Arrow data, split into one partition per core."""
        batches = data.to_batches() if isinstance(data, pa.Table) else list(data)
        schema = schema or (data.schema if isinstance(data, pa.Table) else batches[0].schema)
        parts: list[list[pa.RecordBatch]] = [[] for _ in range(self._partitions)]
        for i, batch in enumerate(batches):
            parts[i % self._partitions].append(batch)
        parts = [p for p in parts if p] or [[pa.RecordBatch.from_pylist([], schema=schema)]]
        self._ctx.register_record_batches(name, parts)
        self._schemas[name] = schema
        return schema

    def register_source(
        self,
        name: str,
        source: TableSource,
        *,
        declared: dict[str, pa.DataType] | None = None,
        staging_dir: Path | None = None,
        in_memory: bool = False,
    ) -> pa.Schema:
        """Register a connector's table under ``name``; CSV gets kalla's exact type inference.

        ``in_memory`` holds a local source as Arrow (see :meth:`fits_in_memory`): a CSV file is
        parsed once instead of staged to Parquet, Parquet files are decoded once, so the run's
        several passes (duplicate check, match, anti-joins) do not do it again.
        """
        declared = declared or {}
        if source.object_store is not None:
            self._ctx.register_object_store(source.object_store.url, source.object_store.build())
        with translate(stage="staging", source=name):
            if source.format == "csv":
                if source.object_store is not None:
                    return self._register_remote_csv(name, source, declared)
                return self._register_local_csv(name, source, declared, staging_dir, in_memory)
            if in_memory and source.object_store is None:
                import pyarrow.parquet as pq

                table = pq.read_table(source.paths if len(source.paths) > 1 else source.paths[0])
                return self.register_arrow(name, table)
            return self._register_parquet(name, source)

    def _register_local_csv(
        self,
        name: str,
        source: TableSource,
        declared: dict[str, pa.DataType],
        staging_dir: Path | None,
        in_memory: bool,
    ) -> pa.Schema:
        header = _csv.read_header(source.paths[0])
        _check_declared(name, header, declared)
        if in_memory or staging_dir is None:
            text = list(
                _csv.iter_text_batches(source.paths, header, streaming=False, declared=declared)
            )
            columns = _csv.infer_types(text, header, declared)
            typed = [_csv.to_typed(b, columns, name) for b in text]
            del text
            return self.register_arrow(name, typed, columns.schema)
        # Bounded memory: one streaming pass to infer, one to convert into Parquet staging.
        columns = _csv.infer_types(
            _csv.iter_text_batches(source.paths, header, streaming=True, declared=declared),
            header,
            declared,
        )
        staging_dir.mkdir(parents=True, exist_ok=True)
        out = staging_dir / f"{name}.parquet"
        with staging_writer(out, columns.schema) as writer:
            for batch in _csv.iter_text_batches(
                source.paths, header, streaming=True, declared=declared
            ):
                writer.write_batch(_csv.to_typed(batch, columns, name), row_group_size=256 * 1024)
        self._ctx.register_parquet(name, str(out))
        self._schemas[name] = columns.schema
        return columns.schema

    def _register_remote_csv(
        self, name: str, source: TableSource, declared: dict[str, pa.DataType]
    ) -> pa.Schema:
        # Object-store CSV: DataFusion reads it in place; decimals need declared types.
        kwargs: dict[str, Any] = {"file_extension": source.file_extension or ".csv"}
        self._ctx.register_csv(name, _csv_target(source), **kwargs)
        schema = self._ctx.table(name).schema()
        if declared:
            fields = [pa.field(f.name, declared.get(f.name, f.type)) for f in schema]
            self._ctx.deregister_table(name)
            self._ctx.register_csv(
                name,
                _csv_target(source),
                schema=pa.schema(fields),
                **kwargs,
            )
            schema = pa.schema(fields)
        self._schemas[name] = schema
        return schema

    def _register_parquet(self, name: str, source: TableSource) -> pa.Schema:
        if len(source.paths) == 1:
            self._ctx.register_parquet(
                name, source.paths[0], file_extension=source.file_extension or ".parquet"
            )
        else:
            self._ctx.register_dataset(name, pads.dataset(source.paths, format="parquet"))
        schema = self._ctx.table(name).schema()
        self._schemas[name] = schema
        return schema

    def register_file(self, name: str, path: str | Path) -> pa.Schema:
        """Register one local Parquet file kalla wrote itself (evidence parts, scratch tables)."""
        return self.register_source(
            name, TableSource(paths=[str(path)], format="parquet", description=name)
        )

    def register_view(self, name: str, query: str) -> pa.Schema:
        """Register ``query`` (kalla-written SQL) as a view named ``name``."""
        df = self._ctx.sql(query)
        self._ctx.register_view(name, df)
        self._schemas[name] = df.schema()
        return self._schemas[name]

    def replace_view(self, name: str, query: str) -> pa.Schema:
        """Register ``query`` as ``name``, replacing what was registered under it."""
        if name in self._schemas:
            self._ctx.deregister_table(name)
            del self._schemas[name]
        return self.register_view(name, query)

    def register_filtered(self, name: str, base: str, predicate: str | None) -> pa.Schema:
        where = f" WHERE {predicate}" if predicate else ""
        return self.register_view(name, f"SELECT * FROM {quote(base)}{where}")

    def filter_predicate(self, base: str, source_filters: list[Any], alias: str) -> str | None:
        return filter_sql(source_filters, self.schema(base), alias)

    # --- queries ------------------------------------------------------------------------------

    def schema(self, name: str) -> pa.Schema:
        """The Arrow schema of a registered table."""
        return self._schemas[name]

    def dataframe(self, query: str) -> DataFrame:
        """Plan ``query`` (SQL kalla wrote or already vetted) into a lazy DataFrame."""
        return self._ctx.sql(query)

    def write_parquet(self, df: DataFrame, path: Path) -> None:
        """Stream ``df`` into one Parquet file (no materialisation in Python)."""
        df.write_parquet(str(path), compression="zstd", compression_level=1)

    def scalar(self, query: str) -> Any:
        rows = self._ctx.sql(query).to_pylist()
        return next(iter(rows[0].values())) if rows else None

    def rows(self, query: str) -> list[dict[str, Any]]:
        return self._ctx.sql(query).to_pylist()

    def close(self) -> None:
        """Forget every table and remove the engine's staging files."""
        for name in list(self._schemas):
            with contextlib.suppress(Exception):
                self._ctx.deregister_table(name)
        self._schemas.clear()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise TableNameInvalid(
            f"table name {name!r} must be letters, digits and underscores, not starting with a digit"
        )
    if name.lower().startswith(RESERVED_PREFIX):
        raise TableNameInvalid(f"table names starting with {RESERVED_PREFIX!r} are kalla's own")


def _base_name(name: str) -> str:
    return f"{RESERVED_PREFIX}base_{name}"


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        return f"{loc}: {first.get('msg', '')}" if loc else str(first.get("msg", ""))
    return str(exc)


def _tolerance(value: Decimal | int | str) -> str:
    """A tolerance as an exact SQL literal; refuses anything but a finite, non-negative number."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        amount = Decimal("NaN")
    if isinstance(value, bool) or not amount.is_finite() or amount < 0:
        raise JobInvalid(f"a tolerance must be a non-negative number, not {value!r}")
    return format(amount, "f")


def _stream(df: DataFrame) -> Iterator[pa.RecordBatch]:
    with translate(stage="query"):
        stream = df.execute_stream()
    return _batches(stream)


def _batches(stream: Any) -> Iterator[pa.RecordBatch]:
    with translate(stage="query"):
        for batch in stream:
            yield batch.to_pyarrow()


def _check_declared(name: str, header: list[str], declared: dict[str, pa.DataType]) -> None:
    missing = [c for c in declared if c not in header]
    if missing:
        raise SchemaMismatch(
            f"source {name!r} is missing declared column(s) {missing}; it has {header}",
            missing=missing,
        )


def parquet_rows(path: Path) -> int:
    """Row count of a Parquet file, or of a folder of part files, from the footers (no scan)."""
    return dataset_rows(path)


def _csv_target(source: TableSource) -> str | list[str | Path]:
    return source.paths[0] if len(source.paths) == 1 else list(source.paths)
