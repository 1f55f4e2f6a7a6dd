"""Objects on S3 and S3-compatible servers: ``s3://bucket/key.csv``, ``….parquet``, ``s3://bucket/prefix/``.

Data is read by DataFusion's own object store, so S3 CSV gets exactly the parsing and type
inference local CSV gets (the original split objects into byte ranges and lost the rows that
crossed a boundary). This module only checks that the objects exist, lists prefixes, and
describes the store; it never downloads data.

Credentials come from :class:`S3Settings`: explicit values (``ConnectorContext.options
["s3_settings"]``) or the standard ``AWS_*`` variables. Secrets are ``SecretStr`` and appear
in no ``repr``, message, plan or ``metadata.json``.

Listing, existence checks and evidence uploads use ``obstore`` (the Python binding of the
same Rust ``object_store`` crate DataFusion uses), imported only when needed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from ..errors import (
    ConnectionFailed,
    EvidenceWriteFailed,
    KallaError,
    MissingDependency,
    PermissionDenied,
    SourceNotFound,
    SourceReadFailed,
    SourceUriInvalid,
    UnsupportedUri,
)
from ..job import JobSource
from ._base import Connector, ConnectorContext, TableSource
from ._redact import scrub
from .files import file_format

__all__ = ["S3Connector", "S3Location", "S3Settings", "S3StoreSpec", "parse_s3_uri", "upload_run"]

_TRUE = {"1", "true", "yes", "on"}


class S3Settings(BaseModel):
    """Where and as whom to reach S3. Secret fields never print."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    region: str = "us-east-1"
    endpoint_url: str | None = None
    allow_http: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Settings from ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
        ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), ``AWS_ENDPOINT_URL`` and ``AWS_ALLOW_HTTP``."""
        env = os.environ if environ is None else environ

        def secret(name: str) -> SecretStr | None:
            value = env.get(name)
            return SecretStr(value) if value else None

        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        allow = env.get("AWS_ALLOW_HTTP")
        return cls(
            access_key_id=secret("AWS_ACCESS_KEY_ID"),
            secret_access_key=secret("AWS_SECRET_ACCESS_KEY"),
            session_token=secret("AWS_SESSION_TOKEN"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=endpoint,
            # An http:// endpoint is an explicit choice of plain HTTP (local servers).
            allow_http=(allow.lower() in _TRUE)
            if allow
            else bool(endpoint and endpoint.startswith("http://")),
        )

    def secrets(self) -> list[str]:
        """The secret values, for scrubbing foreign error messages."""
        return [
            s.get_secret_value()
            for s in (self.access_key_id, self.secret_access_key, self.session_token)
            if s
        ]

    def _keys(self) -> dict[str, str]:
        out = {}
        for name in ("access_key_id", "secret_access_key", "session_token"):
            value: SecretStr | None = getattr(self, name)
            if value is not None:
                out[name] = value.get_secret_value()
        return out

    def obstore(self, bucket: str) -> Any:
        """An ``obstore`` S3 store for ``bucket`` that gives up on dead servers within seconds."""
        try:
            from obstore.store import S3Store
        except ImportError as exc:
            raise MissingDependency(
                "the S3 connector needs obstore: pip install 'kalla[s3]'", extra="s3"
            ) from exc
        kwargs: dict[str, Any] = {"region": self.region, **self._keys()}
        if self.endpoint_url:
            kwargs["endpoint"] = self.endpoint_url
        if not self._keys():
            kwargs["skip_signature"] = True
        return S3Store(
            bucket,
            client_options={
                "allow_http": self.allow_http,
                "connect_timeout": "5s",
                "timeout": "60s",
            },
            retry_config={
                "max_retries": 2,
                "backoff": {"init_backoff": timedelta(milliseconds=100)},
                "retry_timeout": timedelta(seconds=15),
            },
            **kwargs,
        )


def settings_from(options: Mapping[str, Any]) -> S3Settings:
    """The settings a run uses: ``options["s3_settings"]`` (model or dict) or the environment."""
    given = options.get("s3_settings")
    if given is None:
        return S3Settings.from_env()
    return given if isinstance(given, S3Settings) else S3Settings.model_validate(given)


@dataclass
class S3StoreSpec:
    """DataFusion's object store for one bucket (one store per bucket).

    The engine registers it with ``ctx.register_object_store(spec.url, spec.build())``;
    ``url`` is ``s3://bucket/`` (the trailing slash matters to DataFusion 55).
    """

    bucket: str
    settings: S3Settings = field(repr=False)
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"s3://{self.bucket}/"

    def build(self) -> Any:
        from datafusion.object_store import AmazonS3

        return AmazonS3(
            bucket_name=self.bucket,
            region=self.settings.region,
            endpoint=self.settings.endpoint_url,
            allow_http=self.settings.allow_http,
            **self.settings._keys(),
        )

    def __getstate__(self) -> dict[str, Any]:
        # Plans and run records are pickled (Ray): carry where, never who.
        return {
            "bucket": self.bucket,
            "settings": self.settings.model_copy(
                update={"access_key_id": None, "secret_access_key": None, "session_token": None}
            ),
        }


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/key``: a key, or a prefix when it ends with ``/`` (or is empty)."""

    bucket: str
    key: str

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def url(self, key: str | None = None) -> str:
        return f"s3://{self.bucket}/{self.key if key is None else key}"


def parse_s3_uri(uri: str) -> S3Location:
    """Bucket and key of an ``s3://`` URI; credentials in URIs are refused, not parsed."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise SourceUriInvalid(f"{uri!r} is not an s3://bucket/key URI")
    if "@" in parts.netloc or parts.query:
        raise SourceUriInvalid(
            "S3 URIs carry no credentials or options; set AWS_* variables or the S3 settings"
        )
    return S3Location(parts.netloc, parts.path.lstrip("/"))


@contextmanager
def _store_errors(what: str, settings: S3Settings, *, write: bool = False) -> Iterator[None]:
    """The one place object-store exceptions become kalla errors (scrubbed of secrets)."""
    try:
        yield
    except KallaError:
        raise
    except Exception as exc:
        text = scrub(str(exc).split("\n\nDebug source:", 1)[0], settings.secrets())[:500]
        name = type(exc).__name__
        endpoint = settings.endpoint_url or "AWS S3"
        msg = f"{what} ({endpoint}): {text}"
        if write:
            raise EvidenceWriteFailed(msg) from exc
        if isinstance(exc, FileNotFoundError) or name == "NotFoundError" or "NoSuchBucket" in text:
            raise SourceNotFound(msg) from exc
        # A status code as a whole number: "403" also occurs inside timings ("204.464403ms").
        if name in ("PermissionDeniedError", "UnauthenticatedError") or re.search(r"\b403\b", text):
            raise PermissionDenied(msg) from exc
        if (
            "error sending request" in text.lower()
            or "connect" in text.lower()
            or "timed out" in text.lower()
        ):
            raise ConnectionFailed(msg) from exc
        raise SourceReadFailed(msg) from exc


class S3Connector(Connector):
    """Points the engine at objects on S3; DataFusion reads them in place."""

    schemes = ("s3",)
    extra = "s3"

    def check(self, uri: str) -> None:
        loc = parse_s3_uri(uri)
        if not loc.is_prefix and file_format(loc.key) is None:
            raise UnsupportedUri(
                f"cannot read {uri!r}: S3 sources must be .csv or .parquet objects, or a prefix "
                "ending with '/'",
                uri=uri,
            )

    def open(self, source: JobSource, ctx: ConnectorContext) -> TableSource:
        self.check(source.uri)
        loc = parse_s3_uri(source.uri)
        settings = settings_from(ctx.options)
        store = settings.obstore(loc.bucket)
        import obstore

        spec = S3StoreSpec(loc.bucket, settings)
        if not loc.is_prefix:
            with _store_errors(f"source {source.alias!r}: cannot read {loc.url()}", settings):
                obstore.head(store, loc.key)
            fmt: Literal["csv", "parquet"] = "csv" if file_format(loc.key) == "csv" else "parquet"
            return TableSource(
                paths=[loc.url()], format=fmt, description=loc.url(), object_store=spec
            )
        with _store_errors(f"source {source.alias!r}: cannot list {loc.url()}", settings):
            keys = sorted(
                m["path"]
                for chunk in obstore.list(store, prefix=loc.key or None, chunk_size=1000)
                for m in chunk
                if m["size"] > 0 and file_format(m["path"])
            )
        if not keys:
            raise SourceNotFound(
                f"source {source.alias!r}: no .csv or .parquet objects under {loc.url()}",
                alias=source.alias,
            )
        formats = {file_format(k) for k in keys}
        if len(formats) > 1:
            raise UnsupportedUri(
                f"source {source.alias!r}: {loc.url()} mixes CSV and Parquet objects; use one format",
                alias=source.alias,
            )
        return TableSource(
            paths=[loc.url(k) for k in keys],
            format=formats.pop(),  # type: ignore[arg-type]
            description=loc.url(),
            object_store=spec,
        )


def published_status(dest: str, settings: S3Settings | None = None) -> str | None:
    """The ``status`` in ``dest``'s ``metadata.json`` (``completed``/``failed``), or ``None``."""
    import json

    import obstore

    settings = settings or S3Settings.from_env()
    loc = parse_s3_uri(dest if dest.endswith("/") else dest + "/")
    store = settings.obstore(loc.bucket)
    try:
        data = obstore.get(store, loc.key + "metadata.json").bytes()
    except FileNotFoundError:
        return None
    except Exception as exc:  # obstore raises its own types; not-found differs by server
        if "not found" in str(exc).lower() or re.search(r"\b404\b", str(exc)):
            return None
        with _store_errors(f"cannot read {loc.url(loc.key + 'metadata.json')}", settings):
            raise
    try:
        return str(json.loads(bytes(data)).get("status"))
    except ValueError:
        return None


def upload_run(local_dir: Path, dest: str, settings: S3Settings | None = None) -> list[str]:
    """Upload a published local run folder to ``s3://bucket/prefix/``; returns the object URLs.

    Data files go first (folders of part files too, recursively) and ``metadata.json`` last,
    so a reader that waits for ``metadata.json`` (as for local runs) never sees a
    half-uploaded run. Each object is written whole (S3 ``PUT`` is atomic per object; large
    files go up as a multipart upload that becomes visible only when complete).
    """
    settings = settings or S3Settings.from_env()
    loc = parse_s3_uri(dest if dest.endswith("/") else dest + "/")
    store = settings.obstore(loc.bucket)
    import obstore

    files = sorted(
        (p for p in local_dir.rglob("*") if p.is_file()),
        key=lambda p: (p.name == "metadata.json", str(p)),
    )
    urls = []
    for path in files:
        key = loc.key + path.relative_to(local_dir).as_posix()
        with _store_errors(f"cannot upload evidence to {loc.url(key)}", settings, write=True):
            obstore.put(store, key, path)
        urls.append(loc.url(key))
    return urls
