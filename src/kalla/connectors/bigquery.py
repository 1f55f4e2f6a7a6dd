"""BigQuery tables as reconciliation sources: ``bigquery://PROJECT/DATASET/TABLE[?location=EU]``.

The table is read through the BigQuery Storage Read API in Arrow format, several streams
in parallel, each streamed into its own Parquet staging file in the run's temporary folder
(bounded memory). The job's filters become the read session's row restriction, with typed
literals (see :mod:`._bq_types`), so the engine receives ``filters_applied=True``. A preview reads one stream of such a
session and cancels it once it has its rows (:meth:`BigQueryConnector.preview`).

Credentials are Google's Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``
or the metadata server); endpoints can be overridden for emulators and private endpoints
(:class:`BigQuerySettings`). When an overridden endpoint is on loopback, kalla talks to it
without credentials and over plain gRPC, as emulators expect.

Options (``ConnectorContext.options``): ``bigquery_settings`` (a :class:`BigQuerySettings`
or a dict of its fields), ``bigquery_streams`` (most read streams, default 2 per CPU),
``columns`` (read only these columns, when the caller knows what the match needs).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from ..errors import SourceUriInvalid
from ..job import JobSource
from ..schema import schema_types
from ._base import Connector, ConnectorContext, TableSource

if TYPE_CHECKING:
    import pyarrow as pa

    from ._bq_read import BqTableRead

__all__ = ["BigQueryConnector", "BigQuerySettings", "BqLocation", "parse_bq_uri"]

_PROJECT = re.compile(r"^(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{2,62}$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_TABLE = re.compile(r"^[^/\x00-\x1f`]{1,1024}$")


@dataclass(frozen=True)
class BqLocation:
    """A parsed ``bigquery://`` URI (it carries no secrets)."""

    project: str
    dataset: str
    table: str
    location: str | None = None

    @property
    def table_id(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def storage_path(self) -> str:
        return f"projects/{self.project}/datasets/{self.dataset}/tables/{self.table}"


def parse_bq_uri(uri: str) -> BqLocation:
    """Project, dataset and table of a ``bigquery://PROJECT/DATASET/TABLE`` URI."""
    parts = urlsplit(uri)
    shape = "bigquery://PROJECT/DATASET/TABLE[?location=LOC]"
    if parts.scheme.lower() != "bigquery":
        raise SourceUriInvalid(f"{uri!r} is not a {shape} URI")
    if "@" in parts.netloc:
        raise SourceUriInvalid(
            "BigQuery URIs carry no credentials; kalla uses Application Default Credentials"
        )
    segments = [unquote(s) for s in parts.path.split("/") if s]
    project = unquote(parts.netloc)
    if len(segments) != 2:
        raise SourceUriInvalid(f"BigQuery URI {uri!r} must look like {shape}")
    dataset, table = segments
    if not _PROJECT.match(project):
        raise SourceUriInvalid(f"BigQuery URI {uri!r}: {project!r} is not a project id")
    if not _DATASET.match(dataset):
        raise SourceUriInvalid(f"BigQuery URI {uri!r}: {dataset!r} is not a dataset name")
    if not _TABLE.match(table):
        raise SourceUriInvalid(f"BigQuery URI {uri!r}: {table!r} is not a table name")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - {"location"})
    if unknown:
        raise SourceUriInvalid(
            f"BigQuery URI {uri!r}: unknown option(s) {unknown}; the only one is 'location'"
        )
    return BqLocation(project, dataset, table, params.get("location") or None)


def _is_loopback(endpoint: str | None) -> bool:
    if not endpoint:
        return False
    host = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class BigQuerySettings(BaseModel):
    """Where to reach BigQuery. Credentials are never settings: they come from ADC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_endpoint: str | None = Field(None, description="REST endpoint, e.g. http://127.0.0.1:9050.")
    storage_endpoint: str | None = Field(
        None, description="Storage Read API gRPC host:port, e.g. 127.0.0.1:9060."
    )
    billing_project: str | None = Field(
        None, description="Project the read session is created in (default: the table's)."
    )
    timeout: float = Field(60.0, gt=0, description="Seconds a call may take, retries included.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BigQuerySettings:
        """``KALLA_BIGQUERY_API_ENDPOINT``, ``KALLA_BIGQUERY_STORAGE_ENDPOINT``,
        ``KALLA_BIGQUERY_BILLING_PROJECT``, ``KALLA_BIGQUERY_TIMEOUT``."""
        env = os.environ if environ is None else environ
        timeout = env.get("KALLA_BIGQUERY_TIMEOUT")
        return cls(
            api_endpoint=env.get("KALLA_BIGQUERY_API_ENDPOINT") or None,
            storage_endpoint=env.get("KALLA_BIGQUERY_STORAGE_ENDPOINT") or None,
            billing_project=env.get("KALLA_BIGQUERY_BILLING_PROJECT") or None,
            timeout=float(timeout) if timeout else 60.0,
        )

    @property
    def anonymous(self) -> bool:
        """Emulators on this machine take no credentials (and speak plain gRPC)."""
        endpoints = [e for e in (self.api_endpoint, self.storage_endpoint) if e]
        return bool(endpoints) and all(_is_loopback(e) for e in endpoints)

    def describe(self) -> str:
        return f"BigQuery at {self.api_endpoint}" if self.api_endpoint else "BigQuery"


def settings_from(options: Mapping[str, Any]) -> BigQuerySettings:
    given = options.get("bigquery_settings")
    if given is None:
        return BigQuerySettings.from_env()
    return given if isinstance(given, BigQuerySettings) else BigQuerySettings.model_validate(given)


class BigQueryConnector(Connector):
    """Streams a BigQuery table (filters pushed down) into Parquet staging files."""

    schemes = ("bigquery",)
    extra = "bigquery"

    def check(self, uri: str) -> None:
        parse_bq_uri(uri)

    def open(self, source: JobSource, ctx: ConnectorContext) -> TableSource:
        read = self._read(source, ctx)
        paths, complete = read.run(source.filters, ctx.staging_dir)
        loc = read.loc
        return TableSource(
            paths=paths,
            format="parquet",
            description=f"bigquery://{loc.project}/{loc.dataset}/{loc.table}",
            filters_applied=complete,
        )

    def preview(self, source: JobSource, limit: int, ctx: ConnectorContext) -> pa.Table:
        """The first ``limit`` rows passing the filters, typed exactly as :meth:`open` stages them.

        A Storage Read session like a run's (the filters are its row restriction, declared
        types are cast the same way), but with one stream, read only until ``limit`` rows
        arrived and then cancelled: BigQuery sends nothing more and nothing is staged.
        One stream, because every stream granted starts its own server-side scan and a
        preview wants the first rows, not throughput. The Storage Read API (rather than a
        ``jobs.query … LIMIT n``) keeps the types identical to a run's and bills no query.
        Filters BigQuery cannot apply (JSON, GEOGRAPHY columns) are applied to each batch
        as the run's engine applies them, reading on until ``limit`` rows pass (at most
        ``PREVIEW_SCAN_ROWS`` rows).
        """
        return self._read(source, ctx).preview(source.filters, limit)

    def _read(self, source: JobSource, ctx: ConnectorContext) -> BqTableRead:
        from ._bq_read import BqTableRead  # imports the Google SDK

        streams = ctx.options.get("bigquery_streams")
        columns = ctx.options.get("columns")
        return BqTableRead(
            loc=parse_bq_uri(source.uri),
            settings=settings_from(ctx.options),
            alias=source.alias,
            declared=schema_types(source.schema_),
            max_streams=int(streams) if streams else 2 * (os.cpu_count() or 1),
            columns=list(columns) if columns else None,
            cancel=ctx.cancel,
        )
