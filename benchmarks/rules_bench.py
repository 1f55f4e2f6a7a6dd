"""Rules at scale: a three-rule waterfall against one rule, and sum matching.

Usage::

    python benchmarks/rules_bench.py [--rows 1000000] [--repeat 3]

On the ``one_to_one`` data it times ``kalla run`` (whole process, best of ``--repeat``) of the
data set's own single-rule recipe and of a three-rule waterfall over the same data:

1. ``exact``: same reference and the same amount;
2. ``tolerance``: same reference, amounts within 0.02;
3. ``date_window``: same customer and amount, booked within 30 days, one-to-one, closest date
   first.

The target is waterfall ≤ 2× single rule. On the ``split`` and ``batch`` data it times a sum
rule (payments summing to an invoice; one payment for a batch of invoices) and checks its pairs
against the generator's expected counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run import _dataset, _measure  # noqa: E402

KALLA = (
    str(ROOT / ".venv-bench" / "bin" / "kalla")
    if (ROOT / ".venv-bench").exists()
    else str(ROOT / ".venv" / "bin" / "kalla")
)

WATERFALL = [
    {"name": "exact", "match_sql": "SELECT i.invoice_id, p.payment_id FROM left_src i JOIN right_src p "
     "ON i.invoice_id = p.reference_number AND i.amount = p.paid_amount"},
    {"name": "tolerance", "match_sql": "SELECT i.invoice_id, p.payment_id FROM left_src i JOIN right_src p "
     "ON i.invoice_id = p.reference_number AND tolerance_match(i.amount, p.paid_amount, 0.02)"},
    {"name": "date_window", "cardinality": "one_to_one", "rank_by": ["abs(i.invoice_date - p.payment_date)"],
     "match_sql": "SELECT i.invoice_id, p.payment_id FROM left_src i JOIN right_src p "
     "ON i.customer_id = p.payer_id AND i.amount = p.paid_amount "
     "AND date_within(i.invoice_date, p.payment_date, 30)"},
]  # fmt: skip

SUMS = {
    "split": {"name": "split", "kind": "aggregate", "many": "right", "group_by": "reference_number",
              "many_amount": "paid_amount", "one_key": "invoice_id", "one_amount": "amount"},
    "batch": {"name": "batch", "kind": "aggregate", "many": "left", "group_by": "batch_ref",
              "many_amount": "amount", "one_key": "reference_number", "one_amount": "paid_amount"},
}  # fmt: skip


def _recipe(data_dir: Path, out: Path, rules: list[dict] | None) -> Path:
    raw = yaml.safe_load((data_dir / "recipe.yaml").read_text())
    for side in ("left", "right"):
        raw["sources"][side]["uri"] = str(data_dir / raw["sources"][side]["uri"])
    if rules is not None:
        raw.pop("match_sql")
        raw["rules"] = rules
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _time(recipe: Path, repeat: int) -> tuple[float, float, dict]:
    best, rss, payload = float("inf"), 0.0, {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="kalla-rules-") as out:
            proc = _measure([KALLA, "run", str(recipe), "--output", out, "--json"], timeout=1800)
            if proc.returncode != 0:
                raise SystemExit(f"kalla run failed: {proc.stderr[-2000:]}")
            payload = json.loads(proc.stdout)
            meta = json.loads(
                (Path(out) / "runs" / payload["run_id"] / "metadata.json").read_text()
            )
            payload["rules"] = [(r["name"], r["pairs"]) for r in meta["rules"]]
            best, rss = min(best, proc.seconds), max(rss, proc.peak_rss_mb)
    return best, rss, payload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kalla-rules-recipes-") as tmp:
        work = Path(tmp)
        data = _dataset("one_to_one", args.rows, 42, "csv")
        (work / "single").mkdir()
        (work / "waterfall").mkdir()
        single = _time(_recipe(data.directory, work / "single", None), args.repeat)
        waterfall = _time(_recipe(data.directory, work / "waterfall", WATERFALL), args.repeat)
        print(f"one_to_one {args.rows:,} rows")
        print(
            f"  single rule   {single[0]:7.2f} s  {single[1]:7.0f} MiB  pairs {single[2]['matched_count']:,}"
        )
        print(
            f"  3-rule waterfall {waterfall[0]:4.2f} s  {waterfall[1]:7.0f} MiB  {waterfall[2]['rules']}"
        )
        print(f"  ratio {waterfall[0] / single[0]:.2f}x (target <= 2.0x)")
        for shape, rule in SUMS.items():
            data = _dataset(shape, args.rows, 42, "csv")
            (work / shape).mkdir()
            seconds, rss, payload = _time(
                _recipe(data.directory, work / shape, [rule]), args.repeat
            )
            print(f"{shape} {args.rows:,} invoices: sum rule {seconds:.2f} s, {rss:.0f} MiB, "
                  f"pairs {payload['matched_count']:,} (key-join pairs {data.expected.matched:,}), "
                  f"unmatched {payload['unmatched_left_count']:,} / {payload['unmatched_right_count']:,}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
