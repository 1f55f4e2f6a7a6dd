"""PostgreSQL tables as reconciliation sources: ``postgres://user:pass@host:port/db?table=T``.

``table`` names the table or view and ``schema`` its schema (default ``public``); every
other query parameter (``sslmode``, ``application_name``, ``options``, …) goes to the
connection unchanged — the original dropped them all, ``sslmode`` included.

The table is read in one consistent snapshot, in parallel block ranges, streamed to
Parquet staging files in the run's temporary folder (see :mod:`._pg_read`), with the job's
filters pushed into the ``WHERE`` clause as bound values (see :mod:`._pg_filters`), so the
engine receives ``filters_applied=True``.

Options (``ConnectorContext.options``): ``postgres_partitions`` — how many connections
read the table at once (default: one per 64 MiB of heap, at most one per CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa

from ..errors import MissingDependency, SourceUriInvalid
from ..job import JobSource
from ..schema import schema_types
from ._base import Connector, ConnectorContext, TableSource
from ._pg_errors import PgSite
from ._pg_filters import build_where
from ._pg_read import TableRead
from ._redact import redact_uri, secrets_in

__all__ = ["PgLocation", "PostgresConnector", "parse_pg_uri"]

#: Seconds libpq waits for a connection unless the URI says otherwise.
DEFAULT_CONNECT_TIMEOUT = "10"
_OWN_PARAMS = ("table", "schema")


@dataclass(frozen=True)
class PgLocation:
    """A parsed source URI: where to connect (secret) and what to read (not secret)."""

    conn_uri: str = field(repr=False)
    schema: str
    table: str
    host: str
    database: str
    redacted: str
    secrets: tuple[str, ...] = field(repr=False)


def parse_pg_uri(uri: str) -> PgLocation:
    """Split a source URI into the libpq connection URI and the table to read."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise SourceUriInvalid(f"malformed PostgreSQL URI {redact_uri(uri)!r}: {exc}") from exc
    params = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in params if k in _OWN_PARAMS}
    rest = [(k, v) for k, v in params if k not in _OWN_PARAMS]
    table = own.get("table", "").strip()
    if not table:
        raise SourceUriInvalid(
            f"PostgreSQL URI {redact_uri(uri)!r} needs ?table=NAME (and optionally &schema=NAME)"
        )
    if not any(k == "connect_timeout" for k, _ in rest):
        rest.append(("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    conn_uri = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    query_host = dict(rest).get("host")
    host = parts.hostname or query_host or "localhost"
    host = f"{host}:{port or 5432}"
    database = parts.path.lstrip("/") or (parts.username or "postgres")
    return PgLocation(
        conn_uri=conn_uri,
        schema=own.get("schema", "").strip() or "public",
        table=table,
        host=host,
        database=database,
        redacted=redact_uri(uri),
        secrets=tuple(secrets_in(uri)),
    )


def _driver() -> Any:
    try:
        import adbc_driver_postgresql.dbapi as dbapi
    except ImportError as exc:
        raise MissingDependency(
            "the PostgreSQL connector needs its driver: pip install 'kalla[postgres]'",
            extra="postgres",
        ) from exc
    return dbapi


class PostgresConnector(Connector):
    """Streams a PostgreSQL table (filters pushed down) into Parquet staging files."""

    schemes = ("postgres", "postgresql")
    extra = "postgres"

    def check(self, uri: str) -> None:
        parse_pg_uri(uri)

    def preview(self, source: JobSource, limit: int, ctx: ConnectorContext) -> pa.Table:
        """``SELECT … WHERE <filters> LIMIT n`` in PostgreSQL itself: nothing else is read."""
        loc = parse_pg_uri(source.uri)
        read, site = self._read(source, loc, ctx)
        return read.preview(
            lambda cols: build_where(source.filters, cols, alias=source.alias, table=site.table),
            limit,
        )

    def _read(
        self, source: JobSource, loc: PgLocation, ctx: ConnectorContext
    ) -> tuple[TableRead, PgSite]:
        site = PgSite(
            alias=source.alias,
            table=f"{loc.schema}.{loc.table}",
            host=loc.host,
            database=loc.database,
            secrets=loc.secrets,
        )
        partitions = ctx.options.get("postgres_partitions")
        read = TableRead(
            dbapi=_driver(),
            conn_uri=loc.conn_uri,
            site=site,
            schema=loc.schema,
            table=loc.table,
            alias=source.alias,
            declared=schema_types(source.schema_),
            partitions=int(partitions) if partitions else None,
            cancel=ctx.cancel,
        )
        return read, site

    def open(self, source: JobSource, ctx: ConnectorContext) -> TableSource:
        loc = parse_pg_uri(source.uri)
        read, site = self._read(source, loc, ctx)
        paths = read.run(
            lambda cols: build_where(source.filters, cols, alias=source.alias, table=site.table),
            ctx.staging_dir,
        )
        return TableSource(
            paths=paths,
            format="parquet",
            description=f"{loc.redacted} (table {site.table})",
            filters_applied=True,
        )
