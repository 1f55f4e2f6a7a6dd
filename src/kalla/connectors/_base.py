"""What a connector is: something that turns a source URI into files the engine can scan.

The engine never learns where data came from. A connector either points at files
that already exist (local CSV/Parquet, objects on S3) or streams a remote table
into Parquet staging files in the run's temporary folder, and hands back a
:class:`TableSource`. Adding a connector therefore never edits the engine.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from ..job import JobSource

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Connector", "ConnectorContext", "ObjectStoreSpec", "TableSource"]


class ObjectStoreSpec(Protocol):
    """An object store the engine must know before it can read ``url``-prefixed paths."""

    url: str

    def build(self) -> Any:
        """The DataFusion object store (built lazily; it holds credentials)."""


@dataclass(frozen=True)
class TableSource:
    """Files in one format that together are one source table."""

    paths: list[str]
    format: Literal["csv", "parquet"]
    description: str
    filters_applied: bool = False
    object_store: ObjectStoreSpec | None = None
    file_extension: str | None = None


@dataclass
class ConnectorContext:
    """What a connector may use while opening a source for one run.

    ``cancel`` is set when the run no longer needs the source (the other source failed, or
    the job was cancelled): long reads check it between batches and stop with
    :class:`~kalla.errors.Cancelled` instead of reading a table nobody will match.
    """

    staging_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)


class Connector(ABC):
    """Base class of connectors; subclasses register under the ``kalla.connectors`` entry point."""

    #: URI schemes this connector handles ("file" also covers bare paths).
    schemes: ClassVar[tuple[str, ...]]
    #: The pip extra that installs this connector's dependencies, if any.
    extra: ClassVar[str | None] = None

    @abstractmethod
    def open(self, source: JobSource, ctx: ConnectorContext) -> TableSource:
        """Make ``source`` scannable; raise a :class:`kalla.KallaError` when it cannot be."""

    def preview(self, source: JobSource, limit: int, ctx: ConnectorContext) -> pa.Table:
        """The first ``limit`` rows of ``source`` that pass its filters, typed as a run reads them.

        The seed's ``register_scoped``. Never read the whole source: a connector that can
        push filters and a limit down (a database's ``WHERE … LIMIT``) overrides this.
        The default opens the source and lets the engine scan a limited amount of it
        (:func:`kalla.engine._preview.scan_preview`), which suits files and object stores.
        Returning more than ``limit`` rows is allowed (the caller cuts); fewer means the
        source has no more matching rows (or, for local CSV, none in the rows scanned).
        """
        from ..engine._preview import scan_preview  # the engine imports datafusion: on use

        return scan_preview(self.open(source, ctx), source, limit)

    def check(self, uri: str) -> None:  # noqa: B027 - optional hook
        """Reject a malformed URI before any work starts (cheap, no I/O)."""

    def local_path(self, uri: str) -> Path | None:
        """The local path a URI reads, for allowed-root checks; ``None`` when remote."""
        return None
