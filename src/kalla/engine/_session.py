"""The engine: a DataFusion session with kalla's UDFs, and the only way in (seed D4).

Nothing outside this package touches a ``SessionContext``. Sources come in as
:class:`~kalla.connectors.TableSource` values (files, staged Parquet, objects on S3)
or Arrow data; SQL comes in through :mod:`kalla.sql`, which enforces read-only
queries and casts UDF arguments.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from datafusion import DataFrame, RuntimeEnvBuilder, SessionConfig, SessionContext

from ..connectors import TableSource
from ..errors import SchemaMismatch
from ..sql import quote
from . import _csv
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


class Engine:
    """A DataFusion session for one run (or one notebook): sources, UDFs, bounded memory.

    ``memory_limit`` bounds what sorts, aggregates and joins hold, spilling to
    ``spill_dir``; with a limit, joins run as sort-merge joins, which can spill.
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
        in_memory: bool = True,
    ) -> pa.Schema:
        """Register a connector's table under ``name``; CSV gets kalla's exact type inference."""
        declared = declared or {}
        if source.object_store is not None:
            self._ctx.register_object_store(source.object_store.url, source.object_store.build())
        with translate(stage="staging", source=name):
            if source.format == "csv":
                if source.object_store is not None:
                    return self._register_remote_csv(name, source, declared)
                return self._register_local_csv(name, source, declared, staging_dir, in_memory)
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
            text = list(_csv.iter_text_batches(source.paths, header, streaming=False))
            columns = _csv.infer_types(text, header, declared)
            typed = [_csv.to_typed(b, columns, name) for b in text]
            del text
            return self.register_arrow(name, typed, columns.schema)
        # Bounded memory: one streaming pass to infer, one to convert into Parquet staging.
        columns = _csv.infer_types(
            _csv.iter_text_batches(source.paths, header, streaming=True), header, declared
        )
        staging_dir.mkdir(parents=True, exist_ok=True)
        out = staging_dir / f"{name}.parquet"
        with pq.ParquetWriter(out, columns.schema, compression="lz4") as writer:
            for batch in _csv.iter_text_batches(source.paths, header, streaming=True):
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
        for name in list(self._schemas):
            with contextlib.suppress(Exception):
                self._ctx.deregister_table(name)
        self._schemas.clear()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_declared(name: str, header: list[str], declared: dict[str, pa.DataType]) -> None:
    missing = [c for c in declared if c not in header]
    if missing:
        raise SchemaMismatch(
            f"source {name!r} is missing declared column(s) {missing}; it has {header}",
            missing=missing,
        )


def parquet_rows(path: Path) -> int:
    """Row count of a Parquet file from its footer (no scan)."""
    return pq.ParquetFile(path).metadata.num_rows


def _csv_target(source: TableSource) -> str | list[str | Path]:
    return source.paths[0] if len(source.paths) == 1 else list(source.paths)
