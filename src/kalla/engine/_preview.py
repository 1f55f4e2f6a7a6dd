"""Scoped preview (the seed's ``register_scoped``): a source's typed schema and first rows.

A preview never reads a whole source. Connectors that can push the filters and the limit
down do so (:meth:`kalla.connectors.Connector.preview`: PostgreSQL runs ``SELECT … WHERE
… LIMIT n``); every other connector falls back to :func:`scan_preview`, a limited scan of
what :meth:`~kalla.connectors.Connector.open` returns:

* Parquet (local or S3) and S3 CSV are scanned lazily by DataFusion, which stops once
  ``limit`` rows passed the filters;
* local CSV is read as text up to :data:`PREVIEW_SCAN_ROWS` rows, typed by kalla's exact
  inference *over those rows* (a full run infers from every row, so a column can come out
  narrower in a preview), then filtered and limited. Filters therefore see only the
  scanned rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..connectors import ConnectorContext, ConnectorRegistry, TableSource, default_registry
from ..errors import JobInvalid, SchemaMismatch
from ..job import FilterCondition, JobSource
from ..schema import ColumnSchema, schema_types
from ..sql import quote
from . import _csv
from ._errors import translate
from ._filters import filter_sql
from ._session import Engine

__all__ = [
    "DEFAULT_PREVIEW_LIMIT",
    "MAX_PREVIEW_LIMIT",
    "PREVIEW_SCAN_ROWS",
    "preview_source",
    "scan_preview",
]

#: Rows a preview returns unless asked otherwise, and the most it ever returns.
DEFAULT_PREVIEW_LIMIT = 200
MAX_PREVIEW_LIMIT = 10_000
#: Rows of a local CSV file a preview reads at most.
PREVIEW_SCAN_ROWS = 100_000

_TABLE = "preview"


def preview_source(
    uri: str,
    *,
    filters: Sequence[FilterCondition | Mapping[str, Any]] = (),
    limit: int = DEFAULT_PREVIEW_LIMIT,
    schema: ColumnSchema | None = None,
    options: Mapping[str, Any] | None = None,
    registry: ConnectorRegistry | None = None,
    staging_dir: str | Path | None = None,
) -> pa.Table:
    """The first ``limit`` rows of the source at ``uri`` that pass ``filters``, typed.

    The table's schema is the source's schema as a run would see it (exact decimals,
    dates, …). At most :data:`MAX_PREVIEW_LIMIT` rows are returned whatever ``limit``
    says. Nothing is read beyond what the preview needs (see the module notes).

    Args:
        uri: A source URI, as in a recipe or job.
        filters: Conditions (``FilterCondition`` or ``{"column", "op", "value"}`` dicts).
        limit: Rows wanted, 1 or more.
        schema: Declared columns and types, as in a recipe.
        options: Connector options (``s3_settings``, …).
        registry: The connector registry; default: every installed connector.
        staging_dir: A folder for temporary files; default: a fresh temporary folder.

    Returns:
        The preview rows as an Arrow table.

    Raises:
        UnsupportedUri, MissingDependency, SourceNotFound, FilterInvalid,
        SourceReadFailed, ConnectionFailed, PermissionDenied: As for a run.
        JobInvalid: ``limit`` is below 1.

    Examples:
        >>> import tempfile, pathlib
        >>> from kalla import preview_source
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "payments.csv"
        >>> _ = path.write_text("id,amount\\nP1,10.00\\nP2,99.90\\nP3,5.00\\n")
        >>> table = preview_source(str(path), filters=[{"column": "amount", "op": "lt", "value": 50}], limit=1)
        >>> table.schema.field("amount").type, table.to_pylist()
        (Decimal128Type(decimal128(18, 2)), [{'id': 'P1', 'amount': Decimal('10.00')}])
    """
    if limit < 1:
        raise JobInvalid(f"a preview limit must be at least 1, not {limit}")
    limit = min(limit, MAX_PREVIEW_LIMIT)
    try:
        source = JobSource(
            alias=_TABLE,
            uri=uri,
            filters=[FilterCondition.model_validate(f) for f in filters],
            schema=schema,
        )
    except ValueError as exc:
        raise JobInvalid(f"preview: {exc}".splitlines()[0]) from None
    with translate(stage="staging", source=_TABLE):
        connector = (registry or default_registry()).for_uri(uri)
        connector.check(uri)
        with tempfile.TemporaryDirectory(prefix="kalla-preview-", dir=staging_dir) as tmp:
            ctx = ConnectorContext(staging_dir=Path(tmp), options=dict(options or {}))
            table = connector.preview(source, limit, ctx)
            # Connectors see the limit as a hint; the answer never exceeds it.
            return table.slice(0, limit)


def scan_preview(table: TableSource, source: JobSource, limit: int) -> pa.Table:
    """The default preview: a limited scan of an opened source through a fresh engine."""
    declared = schema_types(source.schema_)
    with Engine(target_partitions=2) as engine, translate(stage="staging", source=source.alias):
        if table.format == "csv" and table.object_store is None:
            schema = _register_csv_head(engine, table, source, declared)
        else:
            schema = engine.register_source(_TABLE, table, declared=declared, in_memory=False)
        predicate = (
            None if table.filters_applied else filter_sql(source.filters, schema, source.alias)
        )
        where = f" WHERE {predicate}" if predicate else ""
        df = engine.dataframe(f"SELECT * FROM {quote(_TABLE)}{where} LIMIT {int(limit)}")
        result = df.to_arrow_table()
    # DataFusion may hand back view types or lose nullability; answer in the source's types.
    return result.cast(schema) if result.schema != schema else result


def _register_csv_head(
    engine: Engine, table: TableSource, source: JobSource, declared: dict[str, pa.DataType]
) -> pa.Schema:
    header = _csv.read_header(table.paths[0])
    missing = [c for c in declared if c not in header]
    if missing:
        raise SchemaMismatch(
            f"source {source.alias!r} is missing declared column(s) {missing}; it has {header}",
            missing=missing,
        )
    batches: list[pa.RecordBatch] = []
    rows = 0
    for batch in _csv.iter_text_batches(table.paths, header, streaming=True, declared=declared):
        batch = batch.slice(0, PREVIEW_SCAN_ROWS - rows)
        batches.append(batch)
        rows += batch.num_rows
        if rows >= PREVIEW_SCAN_ROWS:
            break
    columns = _csv.infer_types(batches, header, declared)
    typed = [_csv.to_typed(b, columns, source.alias) for b in batches]
    return engine.register_arrow(_TABLE, typed or [], columns.schema)
