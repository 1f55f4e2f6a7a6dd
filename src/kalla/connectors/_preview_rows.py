"""Collecting a pushed-down preview batch by batch, filtered exactly as a run filters.

A connector that pushes every job filter down reports ``filters_applied=True`` and the
engine applies nothing more; a preview then only has to stop after ``limit`` rows. When
some filters cannot be pushed down (an Elasticsearch ``text`` or ``scaled_float`` field, a
BigQuery JSON column), a run has the engine apply *every* filter to the staged rows
(:func:`kalla.engine._filters.filter_sql`). A preview does the same, through the same
engine, to each batch it fetches, and stops as soon as ``limit`` rows passed — or once
:data:`kalla.engine._preview.PREVIEW_SCAN_ROWS` rows were examined, the bound a local CSV
preview has too, so a filter that matches almost nothing never turns a preview into a full
read. The engine (and so datafusion) is imported only when such filters exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from ..job import FilterCondition

__all__ = ["PreviewRows"]

_PAGE = "preview_page"


class PreviewRows:
    """The rows of one preview: added batch by batch until :attr:`done`."""

    def __init__(
        self,
        schema: pa.Schema,
        filters: list[FilterCondition],
        *,
        alias: str,
        limit: int,
        pushed_down: bool,
    ) -> None:
        self.schema = schema
        self.limit = limit
        self.rows = 0
        self.scanned = 0
        self._batches: list[pa.RecordBatch] = []
        self._engine: Any = None
        self._predicate: str | None = None
        self.max_scan: int | None = None
        if filters and not pushed_down:
            from ..engine import Engine
            from ..engine._filters import filter_sql
            from ..engine._preview import PREVIEW_SCAN_ROWS

            # Raises FilterInvalid now, before anything is read, as the run would.
            self._predicate = filter_sql(filters, schema, alias)
            self.max_scan = PREVIEW_SCAN_ROWS
            if self._predicate:
                self._engine = Engine(target_partitions=1)

    @property
    def filtering(self) -> bool:
        """Whether batches are filtered here (so they must be added whole)."""
        return self._engine is not None

    @property
    def wanted(self) -> int:
        """Rows still needed."""
        return max(0, self.limit - self.rows)

    @property
    def done(self) -> bool:
        """Enough rows, or (when filtering here) as many rows examined as a preview may."""
        if self.rows >= self.limit:
            return True
        return self.max_scan is not None and self.scanned >= self.max_scan

    def add(self, batch: pa.RecordBatch) -> bool:
        """Keep the rows of ``batch`` (of :attr:`schema`) that pass; returns :attr:`done`."""
        self.scanned += batch.num_rows
        if self._engine is not None and batch.num_rows:
            batch = self._filter(batch)
        kept = batch.slice(0, self.wanted)
        if kept.num_rows:
            self._batches.append(kept)
            self.rows += kept.num_rows
        return self.done

    def _filter(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        engine = self._engine
        engine.register_arrow(_PAGE, [batch], self.schema)
        try:
            df = engine.dataframe(f'SELECT * FROM "{_PAGE}" WHERE {self._predicate}')
            table = df.to_arrow_table()
        finally:
            engine.deregister(_PAGE)
        # DataFusion may answer in view types; the preview answers in the source's types.
        table = table.cast(self.schema) if table.schema != self.schema else table
        return table.combine_chunks().to_batches()[0] if table.num_rows else batch.slice(0, 0)

    def table(self) -> pa.Table:
        """The rows kept so far, at most ``limit``."""
        return pa.Table.from_batches(self._batches, schema=self.schema)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> PreviewRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
