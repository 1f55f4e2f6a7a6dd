"""Deterministic benchmark data: invoices vs payments in four shapes, with a kalla recipe.

Usage::

    python benchmarks/generate.py --shape one_to_one --rows 1000000 --out DIR \\
        [--seed 42] [--format csv|parquet]

writes ``DIR/invoices.csv``, ``DIR/payments.csv`` (or ``.parquet``), ``DIR/recipe.yaml`` (what
``kalla run`` reads) and ``DIR/manifest.json``: the shape, the sizes and the counts a correct
engine must report, known by construction — so a benchmark also checks answers, not only speed.

Shapes (``--rows`` is the number of invoices):

``one_to_one``
    Each paid invoice has one payment whose ``reference_number`` is the invoice id; the rule is
    reference equality plus ``tolerance_match(amount, paid_amount, 0.02)``. Of the invoices, 54 %
    are paid exactly, 4 % off by exactly ±0.01 or ±0.02 (must match: the tolerance boundary),
    2 % off by exactly ±0.03 (must not), 15 % off by 0.03 up to 2 % of the amount, 5 % paid in two
    halves with references ``…-PART1``/``…-PART2`` (never match), 20 % unpaid; plus orphan payments
    with unknown references, 10 % of the invoice count. About 58 % of invoices match.
``split``
    90 % of invoices are paid by 2-5 payments that reference the invoice and sum to its amount to
    the cent; 10 % are unpaid; orphan payments are 5 % of the invoice count. Key join, many to one.
``batch``
    Invoices come in batches of 10-50 sharing a ``batch_ref``; 90 % of batches are paid by one
    payment referencing the batch, for exactly the batch total; orphans are 10 % of the batches.
``cross``
    The ``one_to_one`` data matched on customer, currency and calendar month: every pair in a
    (customer, currency, month) group matches, about ``0.0024 * rows**2`` pairs. Keep rows small:
    the default is 10,000 (≈ 240k pairs); 100,000 rows already give ≈ 24M pairs.

Every column is built by vectorised ``pyarrow.compute`` calls over random bytes drawn in bulk
from one seeded ``random.Random`` (numpy is not a dependency): 1M invoices take about two seconds,
and the same seed gives the same bytes (on little-endian machines, which is all we run on).
Amounts are generated as integer cents and written as ``decimal(18,2)``, so the CSV shows exactly
two decimals.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = [
    "DEFAULT_ROWS",
    "FORMATS",
    "GENERATOR_VERSION",
    "SHAPES",
    "BenchData",
    "Counts",
    "generate",
    "main",
]

SHAPES = ("one_to_one", "split", "batch", "cross")
FORMATS = ("csv", "parquet")
DEFAULT_ROWS = {"one_to_one": 100_000, "split": 100_000, "batch": 100_000, "cross": 10_000}
GENERATOR_VERSION = 1
"""Bumped whenever the output for a given (shape, rows, seed, format) changes; caches key on it."""

_EPOCH_2024 = 19_723  # days from 1970-01-01 to 2024-01-01
_MONEY = pa.decimal128(18, 2)
_INVOICE_COLUMNS = [
    "invoice_id",
    "customer_id",
    "customer_name",
    "invoice_date",
    "due_date",
    "amount",
    "currency",
    "status",
    "description",
    "batch_ref",
]
_PAYMENT_COLUMNS = [
    "payment_id",
    "payer_id",
    "payer_name",
    "payment_date",
    "paid_amount",
    "currency",
    "payment_method",
    "reference_number",
    "bank_reference",
    "notes",
]
# No commas or quotes anywhere, so CSV is written unquoted and both engines parse it the same way.
_CUSTOMERS = [
    "Acme Corporation",
    "Globex Industries",
    "Initech LLC",
    "Umbrella Holdings",
    "Stark Logistics",
    "Wayne Enterprises",
    "Cyberdyne Systems",
    "Soylent Foods",
    "Tyrell Manufacturing",
    "Wonka Confectionery",
    "Hooli Cloud Services",
    "Vandelay Imports",
    "Pied Piper Data",
    "Massive Dynamic",
    "Oscorp Chemicals",
    "Gringotts Trading",
    "Aperture Labs",
    "Dunder Paper Co",
    "Sterling Cooper Media",
    "Monarch Shipping",
]
_CURRENCY_BY_I_MOD_6 = ["USD", "USD", "USD", "USD", "EUR", "GBP"]
_STATUSES = ["open", "open", "sent", "overdue", "disputed"]
_DESCRIPTIONS = [
    "Professional services",
    "Software licence renewal",
    "Hardware delivery",
    "Consulting hours",
    "Maintenance contract",
    "Freight and handling",
    "Training workshop",
    "Cloud hosting",
]
_TERMS_DAYS = [15, 30, 45, 60]
_METHODS = ["wire", "ach", "ach", "card", "check"]
_NOTES = ["", "", "Thank you", "Remittance advice sent", "Paid via online banking", "Partial"]

# one_to_one: what happens to invoice i, by bucket r = uniform 0..99 -> (kind, fixed delta cents).
_SINGLE, _OFF, _HALVES, _UNPAID = 0, 1, 2, 3
_BUCKETS: list[tuple[int, int]] = (
    [(_SINGLE, 0)] * 54
    + [(_SINGLE, 1), (_SINGLE, -1), (_SINGLE, 2), (_SINGLE, -2)]  # boundary: must match at 0.02
    + [(_SINGLE, 3), (_SINGLE, -3)]  # just past the boundary: must not match
    + [(_OFF, 0)] * 15
    + [(_HALVES, 0)] * 5
    + [(_UNPAID, 0)] * 20
)
assert len(_BUCKETS) == 100


@dataclass(frozen=True)
class Counts:
    """What a reconciliation reports: matched pairs and records left unmatched on each side."""

    matched: int
    unmatched_left: int
    unmatched_right: int


@dataclass(frozen=True)
class BenchData:
    """One generated data set: where it is and the answer a correct engine must give."""

    shape: str
    rows: int
    seed: int
    fmt: str
    directory: Path
    left_rows: int
    right_rows: int
    expected: Counts

    @property
    def recipe(self) -> Path:
        return self.directory / "recipe.yaml"

    @property
    def left(self) -> Path:
        return self.directory / f"invoices.{self.fmt}"

    @property
    def right(self) -> Path:
        return self.directory / f"payments.{self.fmt}"


class _Draw:
    """Uniform integers in bulk from one seeded stream: fast, and a function of the seed only."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def ints(self, n: int, low: int, high: int | pa.Array) -> pa.Array:
        """``n`` int64 values in ``[low, high)``, ``high`` possibly per row; modulo bias < 0.2 %."""
        raw = pa.Array.from_buffers(pa.uint32(), n, [None, pa.py_buffer(self.rng.randbytes(4 * n))])
        span = pc.subtract(high, low) if isinstance(high, pa.Array) else high - low
        return pc.add(pc.modulo(raw.cast(pa.int64()), span), low)


def _range(n: int) -> pa.Array:
    """0..n-1 as int64, without building n Python ints."""
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


def _width(count: int) -> int:
    """Six digits like the original generator; eight once the numbers would not fit in six."""
    return 6 if count <= 999_999 else 8


def _ids(prefix: str, numbers: pa.Array, width: int) -> pa.Array:
    digits = pc.utf8_lpad(numbers.cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _dates(days_in_2024: pa.Array) -> pa.Array:
    return pc.add(days_in_2024, _EPOCH_2024).cast(pa.int32()).cast(pa.date32())


def _money(cents: pa.Array) -> pa.Array:
    """Integer cents to decimal(18,2): amounts stay exact and CSV shows exactly two decimals."""
    hundredth = pa.scalar(Decimal("0.01"), pa.decimal128(3, 2))
    return pc.multiply(cents.cast(pa.decimal128(19, 0)), hundredth).cast(_MONEY)


def _pick(choices: Sequence[str], index: pa.Array) -> pa.Array:
    return pc.take(pa.array(choices, pa.string()), index)


def _batches(n: int, draw: _Draw) -> pa.Array:
    """Batch number (0-based) of each of n consecutive invoices, in runs of 10-50."""
    ends = pc.cumulative_sum(draw.ints(n // 10 + 1, 10, 51))  # enough runs to cover n rows
    needed = pc.sum(pc.less(ends, n)).as_py() + 1
    ends = pa.concat_arrays([ends.slice(0, needed - 1), pa.array([n], pa.int64())])
    return pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(ends, _range(needed)))


def _invoices(n: int, draw: _Draw) -> pa.Table:
    """Invoices plus working columns (``_cust``, ``_day``, ``_cents``, ``_batch``) for payments."""
    i = _range(n)
    cust = pc.modulo(i, 20)
    day = draw.ints(n, 0, 306)  # with terms of up to 60 days the due date stays in 2024
    terms = pc.take(pa.array(_TERMS_DAYS, pa.int64()), draw.ints(n, 0, len(_TERMS_DAYS)))
    cents = draw.ints(n, 10_000, 5_010_001)  # 100.00 to 50,100.00
    batch = _batches(n, draw)
    return pa.table(
        {
            "invoice_id": _ids("INV-", pc.add(i, 1), _width(n)),
            "customer_id": _ids("CUST-", pc.add(cust, 1), 6),
            "customer_name": _pick(_CUSTOMERS, cust),
            "invoice_date": _dates(day),
            "due_date": _dates(pc.add(day, terms)),
            "amount": _money(cents),
            "currency": _pick(_CURRENCY_BY_I_MOD_6, pc.modulo(i, 6)),
            "status": _pick(_STATUSES, draw.ints(n, 0, len(_STATUSES))),
            "description": _pick(_DESCRIPTIONS, draw.ints(n, 0, len(_DESCRIPTIONS))),
            "batch_ref": _ids("BATCH-", pc.add(batch, 1), 6),
            "_cust": cust,
            "_day": day,
            "_cents": cents,
            "_batch": batch,
        }
    )


def _payments(
    draw: _Draw,
    cust: pa.Array,
    day: pa.Array,
    cents: pa.Array,
    currency: pa.Array,
    reference: pa.Array,
) -> pa.Table:
    """Payment rows (without ``payment_id``) paying ``cents`` 0-44 days after ``day``."""
    n = len(cust)
    return pa.table(
        {
            "payer_id": _ids("CUST-", pc.add(cust, 1), 6),
            "payer_name": _pick(_CUSTOMERS, cust),
            "payment_date": _dates(pc.add(day, draw.ints(n, 0, 45))),
            "paid_amount": _money(cents),
            "currency": currency,
            "payment_method": _pick(_METHODS, draw.ints(n, 0, len(_METHODS))),
            "reference_number": reference,
            "bank_reference": _ids("BNK", draw.ints(n, 0, 1 << 31), 10),
            "notes": _pick(_NOTES, draw.ints(n, 0, len(_NOTES))),
        }
    )


def _orphans(m: int, draw: _Draw) -> pa.Table:
    """Payments nobody invoiced: references that exist on no invoice or batch."""
    cust = draw.ints(m, 0, 20)
    return _payments(
        draw,
        cust,
        draw.ints(m, 0, 306),
        draw.ints(m, 10_000, 5_010_001),
        _pick(_CURRENCY_BY_I_MOD_6, draw.ints(m, 0, 6)),
        _ids("UNK-", draw.ints(m, 0, 10**8), 8),
    )


def _pay_invoices(draw: _Draw, inv: pa.Table, cents: pa.Array, reference: pa.Array) -> pa.Table:
    """One payment per row of ``inv`` (same customer and currency) for ``cents``."""
    return _payments(
        draw,
        inv["_cust"].combine_chunks(),
        inv["_day"].combine_chunks(),
        cents,
        inv["currency"].combine_chunks(),
        reference,
    )


def _one_to_one(inv: pa.Table, draw: _Draw) -> tuple[pa.Table, Counts]:
    n = inv.num_rows
    bucket = draw.ints(n, 0, 100)
    kind = pc.take(pa.array([k for k, _ in _BUCKETS], pa.int64()), bucket)
    fixed = pc.take(pa.array([d for _, d in _BUCKETS], pa.int64()), bucket)
    cents = inv["_cents"].combine_chunks()
    # Off by 3 cents up to 2 % of the amount, either way: always outside the 0.02 tolerance.
    magnitude = draw.ints(n, 3, pc.add(pc.divide(cents, 50), 1))
    sign = pc.subtract(pc.multiply(draw.ints(n, 0, 2), 2), 1)
    delta = pc.if_else(pc.equal(kind, _OFF), pc.multiply(magnitude, sign), fixed)
    paid = pc.add(cents, delta)

    single = pc.less_equal(kind, _OFF)
    ones = inv.filter(single)
    singles = _pay_invoices(draw, ones, paid.filter(single), ones["invoice_id"].combine_chunks())

    halves = pc.equal(kind, _HALVES)
    split_inv = inv.filter(halves)
    split_cents = cents.filter(halves)
    first = pc.divide(split_cents, 2)
    ids = split_inv["invoice_id"].combine_chunks()
    parts = [
        _pay_invoices(draw, split_inv, first, pc.binary_join_element_wise(ids, "-PART1", "")),
        _pay_invoices(
            draw,
            split_inv,
            pc.subtract(split_cents, first),
            pc.binary_join_element_wise(ids, "-PART2", ""),
        ),
    ]
    orphans = _orphans(n // 10, draw)
    payments = pa.concat_tables([singles, *parts, orphans])

    matches = pc.and_(single, pc.less_equal(pc.abs(delta), 2))
    matched = pc.sum(matches).as_py() or 0
    return payments, Counts(matched, n - matched, payments.num_rows - matched)


def _split(inv: pa.Table, draw: _Draw) -> tuple[pa.Table, Counts]:
    n = inv.num_rows
    paid = pc.not_equal(draw.ints(n, 0, 10), 0)
    payers = inv.filter(paid)
    cents = payers["_cents"].combine_chunks()
    k = draw.ints(payers.num_rows, 2, 6)
    base = pc.divide(cents, k)
    # Parts vary by up to a fifth of an even share; the last part takes the remainder, so the
    # parts always sum to the invoice to the cent and stay positive.
    wiggle = pc.divide(base, 5)
    so_far = pa.repeat(pa.scalar(0, pa.int64()), payers.num_rows)
    ids = payers["invoice_id"].combine_chunks()
    parts = []
    for j in range(5):
        spread = pc.add(pc.multiply(wiggle, 2), 1)
        jitter = pc.subtract(draw.ints(payers.num_rows, 0, spread), wiggle)
        part = pc.if_else(pc.equal(k, j + 1), pc.subtract(cents, so_far), pc.add(base, jitter))
        so_far = pc.add(so_far, part)
        has = pc.greater(k, j)
        parts.append(_pay_invoices(draw, payers.filter(has), part.filter(has), ids.filter(has)))
    orphans = _orphans(n // 20, draw)
    payments = pa.concat_tables([*parts, orphans])
    matched = payments.num_rows - orphans.num_rows
    return payments, Counts(matched, n - payers.num_rows, orphans.num_rows)


def _batch(inv: pa.Table, draw: _Draw) -> tuple[pa.Table, Counts]:
    n = inv.num_rows
    work = pa.table(
        {
            "_batch": inv["_batch"],
            "_cents": inv["_cents"],
            "_day": inv["_day"],
            "_row": _range(n),
        }
    )
    groups = (
        work.group_by("_batch", use_threads=False)
        .aggregate([("_cents", "sum"), ("_day", "max"), ("_row", "min"), ([], "count_all")])
        .sort_by("_batch")
    )
    paid = pc.not_equal(draw.ints(groups.num_rows, 0, 10), 0)
    paid_batches = groups.filter(paid)
    # The payer and currency of a batch are those of its first invoice.
    first_row = pc.take(inv, paid_batches["_row_min"])
    payments = _payments(
        draw,
        first_row["_cust"].combine_chunks(),
        paid_batches["_day_max"].combine_chunks(),
        paid_batches["_cents_sum"].combine_chunks(),
        first_row["currency"].combine_chunks(),
        first_row["batch_ref"].combine_chunks(),
    )
    orphans = _orphans(max(1, groups.num_rows // 10), draw)
    matched = pc.sum(paid_batches["count_all"]).as_py() or 0
    return pa.concat_tables([payments, orphans]), Counts(matched, n - matched, orphans.num_rows)


def _cross(inv: pa.Table, draw: _Draw) -> tuple[pa.Table, Counts]:
    payments, _ = _one_to_one(inv, draw)
    keys = ["who", "cur", "month"]

    def sizes(who: pa.ChunkedArray, cur: pa.ChunkedArray, when: pa.ChunkedArray) -> pa.Table:
        month = pc.add(pc.multiply(pc.year(when), 12), pc.month(when))
        table = pa.table({"who": who, "cur": cur, "month": month})
        return table.group_by(keys, use_threads=False).aggregate([([], "count_all")])

    left = sizes(inv["customer_id"], inv["currency"], inv["invoice_date"])
    right = sizes(payments["payer_id"], payments["currency"], payments["payment_date"])
    both = left.join(right, keys, join_type="inner", left_suffix="_l", right_suffix="_r")
    lcount, rcount = both["count_all_l"], both["count_all_r"]
    matched = pc.sum(pc.multiply(lcount, rcount)).as_py() or 0
    left_hit = pc.sum(lcount).as_py() or 0
    right_hit = pc.sum(rcount).as_py() or 0
    return payments, Counts(matched, inv.num_rows - left_hit, payments.num_rows - right_hit)


_SHAPE_BUILDERS = {"one_to_one": _one_to_one, "split": _split, "batch": _batch, "cross": _cross}


@dataclass(frozen=True)
class _RecipeText:
    title: str
    description: str
    match_sql: str
    match_description: str


_RECIPES = {
    "one_to_one": _RecipeText(
        "Benchmark 1:1 invoices vs payments",
        "One payment per invoice by reference; amounts must agree within 0.02.",
        """SELECT i.invoice_id, i.customer_id, i.amount, p.payment_id, p.paid_amount, p.payment_date
FROM left_src i
JOIN right_src p
  ON i.invoice_id = p.reference_number
 AND tolerance_match(i.amount, p.paid_amount, 0.02)""",
        "Payment reference equals the invoice id; paid amount within 0.02 of the invoice amount.",
    ),
    "split": _RecipeText(
        "Benchmark split payments",
        "Each invoice paid by 2-5 payments that reference it (many payments to one invoice).",
        """SELECT i.invoice_id, i.amount, p.payment_id, p.paid_amount, p.payment_date
FROM left_src i
JOIN right_src p
  ON i.invoice_id = p.reference_number""",
        "Every payment whose reference is the invoice id is one part of that invoice.",
    ),
    "batch": _RecipeText(
        "Benchmark batch payments",
        "10-50 invoices share a batch reference and are paid by one payment for the batch total.",
        """SELECT i.invoice_id, i.batch_ref, i.amount, p.payment_id, p.paid_amount
FROM left_src i
JOIN right_src p
  ON i.batch_ref = p.reference_number""",
        "A payment referencing a batch pays every invoice of that batch.",
    ),
    "cross": _RecipeText(
        "Benchmark cross match by customer, currency and month",
        "Large fan-out: each invoice pairs with every payment of its customer, currency and month.",
        """SELECT i.invoice_id, i.customer_id, i.currency, i.invoice_date,
       p.payment_id, p.payment_date
FROM left_src i
JOIN right_src p
  ON i.customer_id = p.payer_id
 AND i.currency = p.currency
 AND date_trunc('month', i.invoice_date) = date_trunc('month', p.payment_date)""",
        "Same payer as customer, same currency, paid in the calendar month of the invoice.",
    ),
}


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_date32(t):
        return "date"
    if pa.types.is_string(t):
        return "text"
    raise TypeError(f"no recipe type name for {t}")


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid ones), safe for any text."""
    return json.dumps(text, ensure_ascii=False)


def _recipe_yaml(shape: str, left: pa.Schema, right: pa.Schema, fmt: str) -> str:
    """The recipe, written by hand (stdlib only); the typed schema keeps CSV amounts decimal."""
    text = _RECIPES[shape]
    sql = "\n".join("  " + line for line in text.match_sql.splitlines())

    def source(alias: str, file: str, key: str, schema: pa.Schema) -> str:
        columns = "\n".join(f"      {f.name}: {_type_name(f.type)}" for f in schema)
        return (
            f"    alias: {alias}\n    type: file\n    uri: {file}.{fmt}\n"
            f"    primary_key: [{key}]\n    schema:\n{columns}\n"
        )

    return (
        f"# Generated by benchmarks/generate.py (shape {shape}); uris are relative to this file.\n"
        f"recipe_id: bench-{shape.replace('_', '-')}\n"
        f"name: {_quoted(text.title)}\n"
        f"description: {_quoted(text.description)}\n"
        f"match_sql: |-\n{sql}\n"
        f"match_description: {_quoted(text.match_description)}\n"
        "sources:\n"
        "  left:\n"
        + source("left_src", "invoices", "invoice_id", left)
        + "  right:\n"
        + source("right_src", "payments", "payment_id", right)
    )


def _write(table: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "csv":
        # Our own header line: pyarrow quotes header names even with quoting_style="none".
        with path.open("wb") as out:
            out.write((",".join(table.column_names) + "\n").encode())
            options = pacsv.WriteOptions(include_header=False, quoting_style="none")
            pacsv.write_csv(table, out, options)
    else:
        pq.write_table(table, path, row_group_size=128 * 1024)


def generate(shape: str, rows: int, out: str | Path, seed: int = 42, fmt: str = "csv") -> BenchData:
    """Write one data set into ``out`` (created if missing) and return what was written.

    ``manifest.json`` is written last, so its presence marks a complete data set.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use csv or parquet")
    if rows < 1:
        raise ValueError("rows must be at least 1")
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").unlink(missing_ok=True)

    draw = _Draw(seed)
    work = _invoices(rows, draw)
    payments, expected = _SHAPE_BUILDERS[shape](work, draw)
    # Payments arrive in no particular order relative to invoices; ids follow arrival.
    payments = payments.take(pc.sort_indices(draw.ints(payments.num_rows, 0, 1 << 32)))
    m = payments.num_rows
    payments = payments.add_column(0, "payment_id", _ids("PAY-", pc.add(_range(m), 1), _width(m)))
    invoices = work.select(_INVOICE_COLUMNS)
    payments = payments.select(_PAYMENT_COLUMNS)

    _write(invoices, directory / f"invoices.{fmt}", fmt)
    _write(payments, directory / f"payments.{fmt}", fmt)
    recipe = _recipe_yaml(shape, invoices.schema, payments.schema, fmt)
    (directory / "recipe.yaml").write_text(recipe, encoding="utf-8")
    data = BenchData(shape, rows, seed, fmt, directory, rows, m, expected)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "shape": shape,
        "rows": rows,
        "seed": seed,
        "format": fmt,
        "left": data.left.name,
        "right": data.right.name,
        "recipe": data.recipe.name,
        "left_rows": rows,
        "right_rows": m,
        "expected": asdict(expected),
    }
    manifest_text = json.dumps(manifest, indent=2) + "\n"
    (directory / "manifest.json").write_text(manifest_text, encoding="utf-8")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="one_to_one")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="number of invoices (default: 100000; 10000 for cross, whose pairs grow with rows²)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="csv")
    args = parser.parse_args(argv)
    rows = args.rows if args.rows is not None else DEFAULT_ROWS[args.shape]
    if rows < 1:
        parser.error("--rows must be at least 1")
    data = generate(args.shape, rows, args.out, seed=args.seed, fmt=args.fmt)
    print(
        json.dumps(
            {
                "shape": data.shape,
                "directory": str(data.directory),
                "left_rows": data.left_rows,
                "right_rows": data.right_rows,
                "expected": asdict(data.expected),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
