"""Local CSV and Parquet files: a file, a ``file://`` URI, or a folder of one format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from ..errors import SourceNotFound, SourceUriInvalid, UnsupportedUri
from ..job import JobSource
from ._base import Connector, ConnectorContext, TableSource

__all__ = ["FileConnector", "file_format"]

_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def file_format(name: str) -> str | None:
    """``csv`` or ``parquet`` from a file name (``.csv``, ``.parquet``, ``.pq``), else ``None``."""
    return _FORMATS.get(Path(name.lower()).suffix)


class FileConnector(Connector):
    """Reads local files in place; nothing is copied."""

    schemes = ("file",)

    def local_path(self, uri: str) -> Path:
        """The path ``uri`` names, ``~`` and ``~user`` expanded."""
        path = Path(unquote(urlsplit(uri).path)) if uri.lower().startswith("file://") else Path(uri)
        try:
            return path.expanduser()
        except RuntimeError:  # ~name of an unknown user, or no home directory
            raise SourceUriInvalid(
                f"{uri!r} starts with '~' but that user or home directory does not exist"
            ) from None

    def check(self, uri: str) -> None:
        path = self.local_path(uri)
        try:
            if "\x00" in str(path):
                raise ValueError
            os.fsencode(path)
        except (ValueError, UnicodeEncodeError):
            # Every later step (resolve(), stat, open) would fail on it with a foreign error.
            raise SourceUriInvalid(
                f"{uri!r} is not a path this system can represent (NUL byte or invalid text)"
            ) from None
        if path.suffix and file_format(path.name) is None:
            raise UnsupportedUri(
                f"cannot read {uri!r}: local sources must be .csv or .parquet files, "
                "or a folder of them",
                uri=uri,
            )

    def open(self, source: JobSource, ctx: ConnectorContext) -> TableSource:
        self.check(source.uri)
        path = self.local_path(source.uri)
        if path.is_dir():
            return _folder(path, source.alias)
        if not path.is_file():
            raise SourceNotFound(
                f"source {source.alias!r}: file {str(path)!r} does not exist", alias=source.alias
            )
        fmt: Literal["csv", "parquet"] = "csv" if file_format(path.name) == "csv" else "parquet"
        return TableSource(paths=[str(path.resolve())], format=fmt, description=str(path))


def _folder(path: Path, alias: str) -> TableSource:
    files = sorted(p for p in path.iterdir() if p.is_file() and file_format(p.name))
    formats = {file_format(p.name) for p in files}
    if not files:
        raise SourceNotFound(
            f"source {alias!r}: folder {str(path)!r} has no .csv or .parquet files", alias=alias
        )
    if len(formats) > 1:
        raise UnsupportedUri(
            f"source {alias!r}: folder {str(path)!r} mixes CSV and Parquet files; use one format",
            alias=alias,
        )
    fmt: Literal["csv", "parquet"] = "csv" if formats.pop() == "csv" else "parquet"
    return TableSource(
        paths=[str(p.resolve()) for p in files],
        format=fmt,
        description=str(path),
    )
