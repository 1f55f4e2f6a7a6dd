"""Financial UDFs: vectorised with pyarrow.compute, NULL in → NULL out, money decimal-exact.

Each UDF has one exact Arrow signature; :mod:`kalla.sql` casts call arguments to it
(floats through their shortest decimal text), so ``tolerance_match(100.00, 100.02, 0.02)``
is true whatever the column types are.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from datafusion import ScalarUDF, udf

from ..sql import MONEY

__all__ = ["UDFS", "date_within", "normalize_ref", "pct_tolerance_match", "tolerance_match"]

_WIDE = pa.decimal256(40, 10)
_PCT = pa.decimal256(20, 10)
_CMP = pa.decimal256(70, 20)


def tolerance_match(a: pa.Array, b: pa.Array, tolerance: pa.Array) -> pa.Array:
    """``|a − b| ≤ tolerance``, in exact decimal arithmetic."""
    return pc.less_equal(pc.abs(pc.subtract(a, b)), tolerance)


def pct_tolerance_match(a: pa.Array, b: pa.Array, pct: pa.Array) -> pa.Array:
    """``|a − b| ≤ |a| × pct / 100``: ``b`` is within ``pct`` percent of ``a`` (exact)."""
    a, b, pct = pc.cast(a, _WIDE), pc.cast(b, _WIDE), pc.cast(pct, _PCT)
    diff = pc.multiply(pc.abs(pc.subtract(a, b)), pa.scalar(100, pa.decimal256(3, 0)))
    limit = pc.multiply(pc.abs(a), pct)
    return pc.less_equal(pc.cast(diff, _CMP), pc.cast(limit, _CMP))


def date_within(a: pa.Array, b: pa.Array, days: pa.Array) -> pa.Array:
    """``|a − b| ≤ days`` in calendar days."""
    da = pc.cast(a, pa.int32()).cast(pa.int64())
    db = pc.cast(b, pa.int32()).cast(pa.int64())
    return pc.less_equal(pc.abs(pc.subtract(da, db)), days)


def normalize_ref(s: pa.Array) -> pa.Array:
    """Upper-case, keeping only letters and digits: ``inv-2026/001`` → ``INV2026001``."""
    return pc.replace_substring_regex(pc.utf8_upper(s), pattern=r"[^\p{L}\p{N}]", replacement="")


def _make() -> list[ScalarUDF]:
    money = [MONEY, MONEY, MONEY]
    return [
        udf(tolerance_match, money, pa.bool_(), "immutable", name="tolerance_match"),
        udf(pct_tolerance_match, money, pa.bool_(), "immutable", name="pct_tolerance_match"),
        udf(
            date_within,
            [pa.date32(), pa.date32(), pa.int64()],
            pa.bool_(),
            "immutable",
            name="date_within",
        ),
        udf(normalize_ref, [pa.string()], pa.string(), "immutable", name="normalize_ref"),
    ]


UDFS = _make
