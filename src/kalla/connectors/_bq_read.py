"""Reading one BigQuery table into Parquet staging files through the Storage Read API.

* **Metadata first.** The table's REST schema is fetched before the read session is
  created: a missing table is reported as such (not as a failed read), filter columns are
  checked against it, and filter values are written as literals of each column's type.
* **Parallel streams.** One read session, up to ``max_streams`` streams (BigQuery decides
  how many); each stream is read by its own thread into its own Parquet file, batch by
  batch, so memory is a few Arrow batches per stream whatever the table size.
* **Previews read little.** :meth:`BqTableRead.preview` opens the same session with one
  stream and cancels it once ``limit`` rows arrived; rows past the limit are never converted.
* **One place for errors.** Google API, gRPC, auth and transport exceptions become kalla
  errors in :func:`_google_errors`; messages name the alias and the table, never a token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
)
from ..job import FilterCondition
from ._bq_types import BqColumn, arrow_for, row_restriction
from ._preview_rows import PreviewRows
from ._staging import staging_writer, write_staging
from .bigquery import BigQuerySettings, BqLocation

__all__ = ["BqTableRead"]

_SCOPES = ("https://www.googleapis.com/auth/bigquery.readonly",)


def _sdk() -> tuple[Any, Any, Any]:
    try:
        from google.cloud import bigquery, bigquery_storage_v1
        from google.cloud.bigquery_storage_v1 import types
    except ImportError as exc:
        raise MissingDependency(
            "the BigQuery connector needs Google's client libraries: pip install 'kalla[bigquery]'",
            extra="bigquery",
        ) from exc
    return bigquery, bigquery_storage_v1, types


@dataclass(frozen=True)
class _Site:
    alias: str
    table: str
    service: str

    def prefix(self) -> str:
        return f"source {self.alias!r}: BigQuery table {self.table} ({self.service})"


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # RetryError wraps the last failure
    text = str(cause if cause is not None else exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:2])[:500]


@contextmanager
def _google_errors(site: _Site, doing: str, *, filtering: bool = False) -> Iterator[None]:
    """The one place Google SDK exceptions become kalla errors."""
    try:
        yield
    except KallaError:
        raise
    except Exception as exc:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        msg = f"{site.prefix()}: {doing} failed: {_first_line(exc)}"
        details = {"alias": site.alias, "table": site.table}
        cause = getattr(exc, "cause", None) if isinstance(exc, gexc.RetryError) else None
        inner = cause if isinstance(cause, BaseException) else exc
        if isinstance(inner, gexc.NotFound):
            raise SourceNotFound(msg, **details) from exc
        denied = (gexc.Forbidden, gexc.PermissionDenied, gexc.Unauthorized, gexc.Unauthenticated)
        if isinstance(inner, (*denied, auth_exc.GoogleAuthError)):
            raise PermissionDenied(msg, **details) from exc
        if isinstance(inner, gexc.BadRequest | gexc.InvalidArgument) and filtering:
            raise FilterInvalid(msg, **details) from exc
        if isinstance(inner, gexc.Cancelled):
            raise Cancelled(msg, **details) from exc
        if isinstance(
            inner,
            gexc.ServiceUnavailable
            | gexc.DeadlineExceeded
            | gexc.GatewayTimeout
            | gexc.BadGateway
            | gexc.RetryError
            | ConnectionError
            | TimeoutError,
        ) or type(inner).__name__ in ("ConnectionError", "ConnectTimeout", "ReadTimeout"):
            raise ConnectionFailed(msg, **details) from exc
        raise SourceReadFailed(msg, **details) from exc


@dataclass(frozen=True)
class _Session:
    """An open read session: its stream names and the schemas its batches arrive in / leave in."""

    streams: list[str]
    source: pa.Schema | None
    target: pa.Schema
    complete: bool


class BqTableRead:
    """One table read: metadata, one read session, parallel streams into Parquet."""

    def __init__(
        self,
        *,
        loc: BqLocation,
        settings: BigQuerySettings,
        alias: str,
        declared: dict[str, pa.DataType],
        max_streams: int,
        columns: list[str] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.loc = loc
        self.cancel = cancel or threading.Event()
        self.settings = settings
        self.alias = alias
        self.declared = declared
        self.max_streams = max(1, max_streams)
        self.columns = columns
        self.site = _Site(alias, loc.table_id, settings.describe())
        self._stop = threading.Event()

    # --- clients --------------------------------------------------------------------------

    def _credentials(self) -> Any:
        if self.settings.anonymous:
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()
        import google.auth

        with _google_errors(self.site, "finding Application Default Credentials"):
            credentials, _project = google.auth.default(scopes=_SCOPES)
        return credentials

    def _clients(self) -> tuple[Any, Any]:
        bigquery, storage, _types = _sdk()
        from google.api_core.client_options import ClientOptions

        credentials = self._credentials()
        s = self.settings
        rest = bigquery.Client(
            project=s.billing_project or self.loc.project,
            credentials=credentials,
            location=self.loc.location,
            client_options=ClientOptions(api_endpoint=s.api_endpoint) if s.api_endpoint else None,
        )
        if s.storage_endpoint and s.anonymous:
            import grpc
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                BigQueryReadGrpcTransport,
            )

            channel = grpc.insecure_channel(
                s.storage_endpoint,
                options=[("grpc.max_receive_message_length", 128 * 1024 * 1024)],
            )
            transport = BigQueryReadGrpcTransport(channel=channel, credentials=credentials)
            read = storage.BigQueryReadClient(transport=transport)
        else:
            options = ClientOptions(api_endpoint=s.storage_endpoint) if s.storage_endpoint else None
            read = storage.BigQueryReadClient(credentials=credentials, client_options=options)
        return rest, read

    def _retry(self) -> Any:
        from google.cloud.bigquery.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.settings.timeout)

    # --- the read -------------------------------------------------------------------------

    def _session(
        self, rest: Any, read: Any, filters: list[FilterCondition], max_streams: int
    ) -> _Session:
        """The table's schema, then one read session with the filters as its row restriction."""
        _bigquery, _storage, types = _sdk()
        with _google_errors(self.site, "reading the table's schema"):
            table = rest.get_table(
                self.loc.table_id, retry=self._retry(), timeout=self.settings.timeout
            )
        columns = {f.name: BqColumn.of(f.name, f.field_type, f.mode) for f in table.schema}
        self._check_declared(columns)
        selected = self._selected(columns)
        restriction = row_restriction(filters, columns, alias=self.alias, table=self.loc.table_id)
        options = types.ReadSession.TableReadOptions(
            selected_fields=selected or [], row_restriction=restriction.sql
        )
        session_spec = types.ReadSession(
            table=self.loc.storage_path,
            data_format=types.DataFormat.ARROW,
            read_options=options,
        )
        billing = self.settings.billing_project or self.loc.project
        from google.api_core.retry import Retry

        with _google_errors(self.site, "opening a read session", filtering=bool(restriction.sql)):
            session = read.create_read_session(
                parent=f"projects/{billing}",
                read_session=session_spec,
                max_stream_count=max_streams,
                retry=Retry(timeout=self.settings.timeout),
                timeout=self.settings.timeout,
            )
        wanted = selected or list(columns)
        source_schema = (
            pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
            if session.arrow_schema.serialized_schema
            else None
        )
        return _Session(
            streams=[s.name for s in session.streams],
            source=source_schema,
            target=self._target_schema(columns, wanted, source_schema),
            complete=restriction.complete,
        )

    def _close(self, rest: Any, read: Any) -> None:
        rest.close()
        transport = getattr(read, "_transport", None)
        if transport is not None:
            transport.close()

    def run(self, filters: list[FilterCondition], staging_dir: Path) -> tuple[list[str], bool]:
        """Stage the table; returns the Parquet paths and whether every filter was pushed down."""
        rest, read = self._clients()
        try:
            session = self._session(rest, read, filters, self.max_streams)
            target = session.target
            staging_dir.mkdir(parents=True, exist_ok=True)
            names = session.streams
            if not names:
                path = staging_dir / f"{self.alias}-bq-0.parquet"
                write_staging(target.empty_table(), path)
                return [str(path)], session.complete
            paths = [staging_dir / f"{self.alias}-bq-{i}.parquet" for i in range(len(names))]
            source_schema = session.source
            assert source_schema is not None
            with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="kalla-bq") as pool:
                futures = [
                    pool.submit(self._read_stream, read, name, source_schema, target, path)
                    for name, path in zip(names, paths, strict=True)
                ]
                try:
                    for fut in futures:
                        fut.result()
                finally:
                    self._stop.set()
            return [str(p) for p in paths], session.complete
        finally:
            self._close(rest, read)

    def preview(self, filters: list[FilterCondition], limit: int) -> pa.Table:
        """The first ``limit`` rows passing ``filters``; see :meth:`BigQueryConnector.preview`."""
        rest, read = self._clients()
        try:
            session = self._session(rest, read, filters, 1)
            with PreviewRows(
                session.target, filters, alias=self.alias, limit=limit, pushed_down=session.complete
            ) as rows:
                for name in session.streams:
                    assert session.source is not None
                    if self._preview_stream(read, name, session.source, session.target, rows):
                        break
                return rows.table()
        finally:
            self._close(rest, read)

    def _preview_stream(
        self, read: Any, name: str, source: pa.Schema, target: pa.Schema, rows: PreviewRows
    ) -> bool:
        """Read one stream until ``rows`` is done, then cancel it; returns ``rows.done``."""
        stream = read.read_rows(name)
        try:
            with _google_errors(self.site, "reading a stream"):
                for response in stream:
                    payload = response.arrow_record_batch.serialized_record_batch
                    if not payload:
                        continue
                    batch = pa.ipc.read_record_batch(pa.py_buffer(payload), source)
                    if not rows.filtering:
                        batch = batch.slice(0, rows.wanted)  # never convert rows not shown
                    if rows.add(self._convert(batch, target)):
                        return True
            return rows.done
        finally:
            stream.cancel()  # stops the server sending the rest; a no-op once it ended

    def _check_declared(self, columns: dict[str, BqColumn]) -> None:
        missing = [c for c in self.declared if c not in columns]
        if missing:
            raise SchemaMismatch(
                f"{self.site.prefix()}: declared column(s) {missing} are not in the table; "
                f"it has {list(columns)}",
                alias=self.alias,
                missing=missing,
            )

    def _selected(self, columns: dict[str, BqColumn]) -> list[str] | None:
        if not self.columns:
            return None
        unknown = [c for c in self.columns if c not in columns]
        if unknown:
            raise SchemaMismatch(
                f"{self.site.prefix()}: column(s) {unknown} are not in the table; "
                f"it has {list(columns)}",
                alias=self.alias,
                missing=unknown,
            )
        return list(dict.fromkeys(self.columns))

    def _target_schema(
        self, columns: dict[str, BqColumn], wanted: list[str], source: pa.Schema | None
    ) -> pa.Schema:
        fields = []
        for name in wanted:
            col = columns[name]
            target = arrow_for(col, self.declared.get(name))
            if target is None:
                target = source.field(name).type if source is not None else pa.string()
            fields.append(pa.field(name, target))
        return pa.schema(fields)

    def _read_stream(
        self, read: Any, name: str, source: pa.Schema, target: pa.Schema, path: Path
    ) -> None:
        with (
            _google_errors(self.site, "reading a stream"),
            staging_writer(path, target) as writer,
        ):
            for response in read.read_rows(name):
                if self.cancel.is_set():
                    raise Cancelled(f"{self.site.prefix()}: read stopped: the run was cancelled")
                if self._stop.is_set():
                    return
                payload = response.arrow_record_batch.serialized_record_batch
                if not payload:
                    continue
                batch = pa.ipc.read_record_batch(pa.py_buffer(payload), source)
                writer.write_batch(self._convert(batch, target))

    def _convert(self, batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
        arrays = []
        for field in target:
            column = batch.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SourceReadFailed(
                        f"{self.site.prefix()}: column {field.name!r} ({column.type}) does not "
                        f"fit {field.type}: {str(exc)[:200]}",
                        alias=self.alias,
                        column=field.name,
                    ) from exc
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=target)
