"""Elasticsearch indices as reconciliation sources:
``elasticsearch://[user:password@]HOST:PORT/INDEX[?query=URL-ENCODED-JSON]``
(``elasticsearch+https://`` for TLS).

Every matching document is read under one point in time (PIT) with ``search_after`` on
``_shard_doc``, in parallel slices, never ``from/size`` paging; each slice streams its pages
into its own Parquet staging file in the run's temporary folder. Columns come from the
index mapping (see :mod:`._es_mapping`); ``_id`` is a column. The job's filters are pushed
into the query where Elasticsearch compares exactly as the engine would.

A preview (:meth:`ElasticsearchConnector.preview`) is one search of ``size=limit`` with the
same query; when some filters cannot be pushed down it pages until ``limit`` documents pass
them (at most ``PREVIEW_SCAN_ROWS`` documents), never reading the whole index.

Credentials: a password in the URI (basic auth), or an API key from
``KALLA_ELASTICSEARCH_API_KEY``. Neither appears in any message, description or metadata.
``KALLA_ELASTICSEARCH_CA_CERTS`` names a CA bundle for ``elasticsearch+https``.

Options (``ConnectorContext.options``): ``elasticsearch_slices`` (default 2),
``elasticsearch_page_size`` (documents per request, default 1000),
``elasticsearch_timeout`` (seconds per request, default 30; ``KALLA_ELASTICSEARCH_TIMEOUT``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa

from ..errors import (
    Cancelled,
    ConnectionFailed,
    FilterInvalid,
    KallaError,
    MissingDependency,
    PermissionDenied,
    SchemaMismatch,
    SourceNotFound,
    SourceReadFailed,
    SourceUriInvalid,
)
from ..job import JobSource
from ..schema import schema_types
from ._base import Connector, ConnectorContext, TableSource
from ._es_mapping import EsColumn, EsQuery, build_query, columns_from_mapping, hits_to_batch
from ._preview_rows import PreviewRows
from ._redact import redact_uri, scrub
from ._staging import staging_writer

__all__ = ["ElasticsearchConnector", "EsLocation", "parse_es_uri"]

KEEP_ALIVE = "5m"
#: Most documents one preview request asks for (Elasticsearch's default result window).
_MAX_PAGE = 10_000


@dataclass(frozen=True)
class EsLocation:
    """A parsed source URI: where to connect (with secrets) and what to read."""

    url: str = field(repr=False)  # scheme://host:port, no credentials
    host: str
    index: str
    query: dict[str, Any] | None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    redacted: str = ""

    def secrets(self) -> list[str]:
        return [s for s in (self.password, os.environ.get("KALLA_ELASTICSEARCH_API_KEY")) if s]


def parse_es_uri(uri: str) -> EsLocation:
    """Host, index, query and credentials of an ``elasticsearch[+https]://`` URI."""
    shape = "elasticsearch://[user:password@]HOST:PORT/INDEX[?query=JSON]"
    try:
        parts = urlsplit(uri)
        port = parts.port or 9200
    except ValueError as exc:
        raise SourceUriInvalid(f"malformed Elasticsearch URI {redact_uri(uri)!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("elasticsearch", "elasticsearch+https") or not parts.hostname:
        raise SourceUriInvalid(f"{redact_uri(uri)!r} is not an {shape} URI")
    index = unquote(parts.path.strip("/"))
    if not index or "/" in index:
        raise SourceUriInvalid(f"Elasticsearch URI {redact_uri(uri)!r} must look like {shape}")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - {"query"})
    if unknown:
        raise SourceUriInvalid(
            f"Elasticsearch URI {redact_uri(uri)!r}: unknown option(s) {unknown}; "
            "the only one is 'query'"
        )
    query = None
    if params.get("query"):
        try:
            query = json.loads(params["query"])
        except json.JSONDecodeError as exc:
            raise SourceUriInvalid(
                f"Elasticsearch URI {redact_uri(uri)!r}: 'query' is not JSON: {exc}"
            ) from exc
        if not isinstance(query, dict):
            raise SourceUriInvalid(
                f"Elasticsearch URI {redact_uri(uri)!r}: 'query' must be a JSON object of "
                'query DSL, e.g. {"term": {"status": "paid"}}'
            )
        query = query.get("query", query) if set(query) == {"query"} else query
    http = "https" if scheme.endswith("+https") else "http"
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return EsLocation(
        url=f"{http}://{host}:{port}",
        host=f"{host}:{port}",
        index=index,
        query=query,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        redacted=redact_uri(uri),
    )


def _client(loc: EsLocation, timeout: float) -> Any:
    try:
        from elasticsearch import Elasticsearch
    except ImportError as exc:
        raise MissingDependency(
            "the Elasticsearch connector needs its client: pip install 'kalla[elasticsearch]'",
            extra="elasticsearch",
        ) from exc
    kwargs: dict[str, Any] = {
        "request_timeout": timeout,
        "max_retries": 2,
        "retry_on_timeout": True,
    }
    api_key = os.environ.get("KALLA_ELASTICSEARCH_API_KEY")
    if api_key:
        kwargs["api_key"] = api_key
    elif loc.username is not None:
        kwargs["basic_auth"] = (loc.username, loc.password or "")
    ca = os.environ.get("KALLA_ELASTICSEARCH_CA_CERTS")
    if ca:
        kwargs["ca_certs"] = ca
    return Elasticsearch(loc.url, **kwargs)


@dataclass(frozen=True)
class _Site:
    alias: str
    index: str
    host: str
    secrets: tuple[str, ...]

    def prefix(self) -> str:
        return f"source {self.alias!r}: Elasticsearch index {self.index!r} on {self.host}"


@contextmanager
def _es_errors(site: _Site, doing: str, *, querying: bool = False) -> Iterator[None]:
    """The one place Elasticsearch client exceptions become kalla errors."""
    try:
        yield
    except KallaError:
        raise
    except Exception as exc:
        from elasticsearch import (
            ApiError,
            AuthenticationException,
            AuthorizationException,
            NotFoundError,
            UnsupportedProductError,
        )
        from elasticsearch import ConnectionError as EsConnectionError

        text = scrub(str(exc), list(site.secrets))[:500]
        msg = f"{site.prefix()}: {doing} failed: {text}"
        details = {"alias": site.alias, "index": site.index, "host": site.host}
        if isinstance(exc, AuthenticationException | AuthorizationException):
            raise PermissionDenied(msg, **details) from exc
        if isinstance(exc, NotFoundError):
            raise SourceNotFound(msg, **details) from exc
        if isinstance(exc, EsConnectionError):
            raise ConnectionFailed(msg, **details) from exc
        if isinstance(exc, ApiError) and exc.meta.status == 400 and querying:
            raise FilterInvalid(msg, **details) from exc
        if isinstance(exc, UnsupportedProductError):
            raise SourceReadFailed(
                f"{site.prefix()}: the server is not Elasticsearch", **details
            ) from exc
        raise SourceReadFailed(msg, **details) from exc


class ElasticsearchConnector(Connector):
    """Streams an index (filters pushed down) into Parquet staging files."""

    schemes = ("elasticsearch", "elasticsearch+https")
    extra = "elasticsearch"

    def check(self, uri: str) -> None:
        parse_es_uri(uri)

    def open(self, source: JobSource, ctx: ConnectorContext) -> TableSource:
        loc = parse_es_uri(source.uri)
        read = self._read(source, loc, ctx)
        try:
            paths, complete = read.run(source, ctx.staging_dir)
        finally:
            read.client.close()
        return TableSource(
            paths=paths,
            format="parquet",
            description=f"{loc.redacted} (index {loc.index})",
            filters_applied=complete,
        )

    def preview(self, source: JobSource, limit: int, ctx: ConnectorContext) -> pa.Table:
        """The first ``limit`` matching documents, typed as :meth:`open` stages them.

        When every filter is pushed into the query (the usual case), this is one search of
        ``size=limit`` sorted on ``_doc``: no point in time, no slices, nothing else read.
        When some filters cannot be pushed (text, scaled_float, float fields, ``_id``
        ranges), a bounded over-fetch could come back short while more matches exist, so
        the preview scans instead — the pushed-down query, paged with ``search_after``
        under a point in time — applies every filter to each page exactly as a run's
        engine would, and stops as soon as ``limit`` rows passed, or after
        ``PREVIEW_SCAN_ROWS`` documents (as a local CSV preview): never a full read.
        """
        loc = parse_es_uri(source.uri)
        read = self._read(source, loc, ctx)
        try:
            return read.preview(source, limit)
        finally:
            read.client.close()

    def _read(self, source: JobSource, loc: EsLocation, ctx: ConnectorContext) -> _IndexRead:
        opts = ctx.options
        timeout = float(
            opts.get("elasticsearch_timeout") or os.environ.get("KALLA_ELASTICSEARCH_TIMEOUT") or 30
        )
        site = _Site(source.alias, loc.index, loc.host, tuple(loc.secrets()))
        return _IndexRead(
            client=_client(loc, timeout),
            site=site,
            loc=loc,
            declared=schema_types(source.schema_),
            slices=max(1, int(opts.get("elasticsearch_slices") or 2)),
            page_size=max(1, int(opts.get("elasticsearch_page_size") or 1000)),
            cancel=ctx.cancel,
        )


@dataclass
class _IndexRead:
    client: Any
    site: _Site
    loc: EsLocation
    declared: dict[str, pa.DataType]
    slices: int
    page_size: int
    cancel: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _plan(self, source: JobSource) -> tuple[list[EsColumn], pa.Schema, EsQuery]:
        """Columns and schema from the mapping, and the query with the filters pushed down."""
        with _es_errors(self.site, "reading the mapping"):
            mapping = self.client.indices.get_mapping(index=self.loc.index).body
        columns = columns_from_mapping(mapping)
        missing = [c for c in self.declared if c not in columns]
        if missing:
            raise SchemaMismatch(
                f"{self.site.prefix()}: declared column(s) {missing} are not in the mapping; "
                f"it has {list(columns)}",
                alias=self.site.alias,
                missing=missing,
            )
        cols = [
            EsColumn(c.name, c.es_type, self.declared[c.name], c.scale)
            if c.name in self.declared and c.es_type == "scaled_float"
            else c
            for c in columns.values()
        ]
        schema = pa.schema([pa.field(c.name, c.arrow) for c in cols])
        query = build_query(
            source.filters, columns, self.loc.query, alias=self.site.alias, index=self.loc.index
        )
        return cols, schema, query

    def run(self, source: JobSource, staging_dir: Path) -> tuple[list[str], bool]:
        cols, schema, query = self._plan(source)
        staging_dir.mkdir(parents=True, exist_ok=True)
        with _es_errors(self.site, "opening a point in time"):
            pit = self.client.open_point_in_time(index=self.loc.index, keep_alive=KEEP_ALIVE)["id"]
        try:
            paths = [staging_dir / f"{self.site.alias}-es-{i}.parquet" for i in range(self.slices)]
            with ThreadPoolExecutor(self.slices, thread_name_prefix="kalla-es") as pool:
                futures = [
                    pool.submit(self._read_slice, pit, i, query.query, cols, schema, path)
                    for i, path in enumerate(paths)
                ]
                try:
                    for fut in futures:
                        fut.result()
                finally:
                    self._stop.set()
        finally:
            with suppress(Exception):
                self.client.close_point_in_time(id=pit)
        return [str(p) for p in paths], query.complete

    def _read_slice(
        self,
        pit: str,
        n: int,
        query: dict[str, Any],
        cols: list[EsColumn],
        schema: pa.Schema,
        path: Path,
    ) -> None:
        body: dict[str, Any] = {"query": query, "size": self.page_size, "sort": ["_shard_doc"]}
        if self.slices > 1:
            body["slice"] = {"id": n, "max": self.slices}
        after = None
        where = self.site.prefix()
        with staging_writer(path, schema) as writer:
            while not self._stop.is_set():
                if self.cancel.is_set():
                    raise Cancelled(f"{where}: read stopped: the run was cancelled")
                request = {**body, "pit": {"id": pit, "keep_alive": KEEP_ALIVE}}
                if after is not None:
                    request["search_after"] = after
                with _es_errors(self.site, "searching", querying=True):
                    page = self.client.search(
                        **request,
                        filter_path=[
                            "pit_id",
                            "hits.hits._id",
                            "hits.hits._source",
                            "hits.hits.sort",
                        ],
                    ).body
                hits = page.get("hits", {}).get("hits", [])
                if not hits:
                    return
                writer.write_batch(hits_to_batch(hits, cols, schema, where=where))
                pit = page.get("pit_id", pit)
                after = hits[-1]["sort"]
                if len(hits) < self.page_size:
                    return

    def preview(self, source: JobSource, limit: int) -> pa.Table:
        """See :meth:`ElasticsearchConnector.preview`."""
        cols, schema, query = self._plan(source)
        where = self.site.prefix()
        hit_fields = ["pit_id", "hits.hits._id", "hits.hits._source", "hits.hits.sort"]
        with PreviewRows(
            schema, source.filters, alias=self.site.alias, limit=limit, pushed_down=query.complete
        ) as rows:
            if not rows.filtering:
                with _es_errors(self.site, "searching", querying=True):
                    page = self.client.search(
                        index=self.loc.index,
                        query=query.query,
                        size=limit,
                        sort=["_doc"],
                        track_total_hits=False,
                        filter_path=hit_fields[1:3],
                    ).body
                hits = page.get("hits", {}).get("hits", [])
                rows.add(hits_to_batch(hits, cols, schema, where=where))
                return rows.table()
            size = min(max(limit, self.page_size), _MAX_PAGE)
            with _es_errors(self.site, "opening a point in time"):
                opened = self.client.open_point_in_time(index=self.loc.index, keep_alive=KEEP_ALIVE)
            pit = opened["id"]
            try:
                after = None
                while True:
                    request: dict[str, Any] = {
                        "query": query.query,
                        "size": size,
                        "sort": ["_shard_doc"],
                        "track_total_hits": False,
                        "pit": {"id": pit, "keep_alive": KEEP_ALIVE},
                    }
                    if after is not None:
                        request["search_after"] = after
                    with _es_errors(self.site, "searching", querying=True):
                        page = self.client.search(**request, filter_path=hit_fields).body
                    hits = page.get("hits", {}).get("hits", [])
                    pit = page.get("pit_id", pit)
                    if not hits:
                        break
                    if rows.add(hits_to_batch(hits, cols, schema, where=where)):
                        break
                    if len(hits) < size:
                        break
                    after = hits[-1]["sort"]
            finally:
                with suppress(Exception):
                    self.client.close_point_in_time(id=pit)
            return rows.table()
