"""Local engine vs Ray engine on the same data: whole-job time and peak memory per process.

Usage::

    python benchmarks/ray_bench.py [--rows 2000000,10000000] [--partitions 4] [--out DIR]

Each run is a fresh ``kalla run`` subprocess (``--engine local`` or ``--engine ray``); the
Ray runs start a Ray instance on this machine (``ray.init`` with 2 CPUs) inside the
driver. Peak memory is ``VmHWM`` of the driver and of every Ray worker process, read
from ``/proc`` when the job ends, so it is the true per-process peak, not a sample.
Data: ``benchmarks/generate.py`` one_to_one shape, Parquet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.generate import generate

_DRIVER = r"""
import json, os, sys, time
from pathlib import Path
import kalla
from kalla.distributed import RayOptions, connect
from kalla.engine import run_job

recipe, out, engine, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
options = None
if engine == "ray":
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=2 << 30)
    connect()
    options = RayOptions(partitions=partitions)
request = kalla.Recipe.load(recipe).to_job_request()
if os.environ.get("KALLA_BENCH_PLAIN"):  # the same run without the reason columns
    request = request.model_copy(update={"explain_unmatched": False})
t = time.perf_counter()
result = run_job(request, Path(out) / str(request.run_id), engine=engine, ray_options=options)
elapsed = time.perf_counter() - t

def hwm(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0

workers = []
if engine == "ray":
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::") and b"IDLE" in title or title.startswith(b"ray::_"):
                workers.append(hwm(int(entry)))
print(json.dumps({
    "seconds": round(elapsed, 2), "driver_peak": hwm(os.getpid()),
    "worker_peak": max(workers, default=0), "workers": len(workers),
    "counts": [result.matched_count, result.unmatched_left_count, result.unmatched_right_count],
}))
if engine == "ray":
    ray.shutdown()
"""


def run(recipe: Path, out: Path, engine: str, partitions: int) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(recipe), str(out), engine, str(partitions)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="2000000,10000000")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="kalla-ray-bench-"))
    mb = 1 << 20
    print("| rows | engine | seconds | driver peak MB | Ray worker peak MB | counts |")
    print("|---|---|---|---|---|---|")
    for rows in (int(r) for r in args.rows.split(",")):
        t = time.perf_counter()
        data = generate("one_to_one", rows, root / f"data_{rows}", seed=42, fmt="parquet")
        print(
            f"<!-- generated {rows:,} rows in {time.perf_counter() - t:.1f} s -->", file=sys.stderr
        )
        for engine in ("local", "ray"):
            r = run(data.recipe, root / f"out_{rows}_{engine}", engine, args.partitions)
            worker = f"{int(r['worker_peak']) // mb:,}" if engine == "ray" else "-"
            print(
                f"| {rows:,} | {engine} | {r['seconds']} | {int(r['driver_peak']) // mb:,} "
                f"| {worker} | {r['counts']} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
