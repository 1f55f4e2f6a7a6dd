"""Data the library accepts and returns besides Arrow: pandas and polars, both optional.

Neither is a dependency of kalla. Input frames are recognised by their module, without
importing it (whoever passes a pandas DataFrame has pandas); any other object that speaks
the Arrow C stream interface (``__arrow_c_stream__``) is read through it. Output frames
import their library on use, and a missing one is a :class:`~kalla.MissingDependency`
naming the extra to install.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from ..errors import MissingDependency

__all__ = ["ArrowLike", "as_arrow", "to_pandas", "to_polars"]

#: What :meth:`kalla.Engine.register_table` accepts.
ArrowLike = Any


def _module(data: object) -> str:
    return type(data).__module__.split(".", 1)[0]


def as_arrow(data: ArrowLike) -> pa.Table | pads.Dataset:
    """``data`` as an Arrow table, or a pyarrow dataset (kept lazy).

    Raises:
        TypeError: ``data`` is none of the accepted kinds.
    """
    if isinstance(data, pa.Table | pads.Dataset):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    module = _module(data)
    if module == "pandas":
        # The index is pandas' bookkeeping, not a column of the source.
        return pa.Table.from_pandas(data, preserve_index=False)
    if module == "polars":
        if type(data).__name__ == "LazyFrame":
            data = data.collect()
        table: pa.Table = data.to_arrow()
        return table
    if hasattr(data, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(data).read_all()
    raise TypeError(
        "expected a pyarrow Table, RecordBatch, RecordBatchReader or Dataset, a pandas or "
        f"polars DataFrame, or an object with __arrow_c_stream__; got {type(data).__name__}"
    )


def to_pandas(table: pa.Table) -> Any:
    """``table`` as a pandas DataFrame (decimals stay ``decimal.Decimal`` objects)."""
    try:
        import pandas  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(
            "pandas is not installed: pip install 'kalla[pandas]'", extra="pandas"
        ) from exc
    return table.to_pandas()


def to_polars(table: pa.Table) -> Any:
    """``table`` as a polars DataFrame."""
    try:
        import polars
    except ImportError as exc:
        raise MissingDependency(
            "polars is not installed: pip install 'kalla[polars]'", extra="polars"
        ) from exc
    return polars.from_arrow(table)
