"""Time ``kalla run`` against the DuckDB baseline on generated data, and check they agree.

Usage::

    python benchmarks/run.py [--rows 10000,100000,1000000] [--repeat 3] [--shapes one_to_one]
                             [--format csv] [--json results.json]

For every shape and size it generates the data once (cached in ``benchmarks/.data/``), then runs
each engine ``--repeat`` times as a whole process — interpreter start, imports, reading the
sources, matching and writing the evidence are all part of the time — and keeps the best wall
clock and the highest peak RSS. Both engines must report the counts the generator knows by
construction; a failing or disagreeing engine is reported and the run goes on.

``cross`` data sets use ``rows // 50`` invoices, because its pairs grow with the square of rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.generate import FORMATS, GENERATOR_VERSION, SHAPES, BenchData, Counts  # noqa: E402

DATA_DIR = ROOT / "benchmarks" / ".data"
BASELINE = ROOT / "benchmarks" / "duckdb_baseline.py"
GENERATOR = ROOT / "benchmarks" / "generate.py"
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
CROSS_DIVISOR = 50
_COUNT_KEYS = {
    "matched": ("matched_count", "matched"),
    "unmatched_left": ("unmatched_left_count", "unmatched_left"),
    "unmatched_right": ("unmatched_right_count", "unmatched_right"),
}


@dataclass
class EngineResult:
    """Best-of-N timing of one engine on one data set, or why it could not be measured."""

    engine: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None
    counts: Counts | None = None
    error: str | None = None

    @property
    def best(self) -> float | None:
        return min(self.seconds) if self.seconds else None


@dataclass
class Scenario:
    """One data set and what each engine did with it."""

    shape: str
    rows: int
    right_rows: int
    expected: Counts
    results: dict[str, EngineResult]

    def verdict(self) -> str:
        """``ok`` when every engine that ran reported the expected counts."""
        problems = []
        for name, result in self.results.items():
            if result.error:
                problems.append(f"{name} failed")
            elif result.counts != self.expected:
                problems.append(f"{name} counts differ")
        return "; ".join(problems) or "ok"


@dataclass(frozen=True)
class _Process:
    returncode: int
    timed_out: bool
    seconds: float
    peak_rss_mb: float
    stdout: str
    stderr: str


def _parse_rows(text: str) -> list[int]:
    """``10000,100k,1M`` -> [10000, 100000, 1000000]."""
    sizes = []
    for item in text.split(","):
        item = item.strip().lower().replace("_", "")
        scale = {"k": 1_000, "m": 1_000_000}.get(item[-1:], 1)
        number = item[:-1] if scale > 1 else item
        try:
            sizes.append(int(float(number) * scale))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a row count: {item!r}") from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError("row counts must be positive")
    return sizes


def _dataset(shape: str, rows: int, seed: int, fmt: str) -> BenchData:
    """The cached data set, generated on first use; the manifest marks a complete one.

    Generation runs in its own process so this one stays small (see ``_measure``).
    """
    directory = DATA_DIR / f"{shape}-{rows}-seed{seed}-{fmt}-v{GENERATOR_VERSION}"
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(GENERATOR),
                "--shape",
                shape,
                "--rows",
                str(rows),
                "--out",
                str(directory),
                "--seed",
                str(seed),
                "--format",
                fmt,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - started
        print(f"  generated {shape} {rows:,} rows in {elapsed:.1f} s", file=sys.stderr)
    manifest = json.loads(manifest_path.read_text())
    return BenchData(
        shape,
        rows,
        seed,
        fmt,
        directory,
        manifest["left_rows"],
        manifest["right_rows"],
        Counts(**manifest["expected"]),
    )


def _measure(cmd: Sequence[str], timeout: float) -> _Process:
    """Run ``cmd`` to completion: wall clock and peak RSS of that process alone.

    Peak RSS comes from GNU time when installed. The fallback, ``wait4``, can overstate it: a
    child's maximum RSS starts from the size of the process that forked it, i.e. this one.
    """
    with tempfile.TemporaryDirectory(prefix="kalla-bench-") as scratch:
        rss_file = Path(scratch) / "maxrss"
        full = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if GNU_TIME else list(cmd)
        out_path, err_path = Path(scratch) / "stdout", Path(scratch) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            started = time.perf_counter()
            # Own session, so a timeout kills the whole tree we started and nothing else.
            proc = subprocess.Popen(full, stdout=out, stderr=err, cwd=ROOT, start_new_session=True)
            reaped, timed_out = threading.Event(), threading.Event()

            def kill() -> None:
                if not reaped.is_set():
                    timed_out.set()
                    os.killpg(proc.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                reaped.set()
                timer.cancel()
            seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        rss_kib = usage.ru_maxrss  # Linux reports KiB
        if GNU_TIME and rss_file.exists():
            last = rss_file.read_text().strip().splitlines()[-1:]  # after any "exited with" line
            if last and last[0].isdigit():
                rss_kib = int(last[0])
        return _Process(
            proc.returncode,
            timed_out.is_set(),
            seconds,
            rss_kib / 1024,
            out_path.read_text(errors="replace"),
            err_path.read_text(errors="replace"),
        )


def _json_objects(stdout: str) -> list[Any]:
    """The whole output as JSON, else every line that is a JSON object (last one wins later)."""
    try:
        return [json.loads(stdout)]
    except ValueError:
        pass
    found = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def _counts_in(value: Any) -> Counts | None:
    """Find matched/unmatched counts anywhere in a JSON document, under either common spelling."""
    if isinstance(value, dict):
        got: dict[str, int] = {}
        for name, keys in _COUNT_KEYS.items():
            for key in keys:
                if isinstance(value.get(key), int) and not isinstance(value.get(key), bool):
                    got[name] = value[key]
                    break
        if len(got) == 3:
            return Counts(**got)
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        counts = _counts_in(child)
        if counts:
            return counts
    return None


def _counts_from_files(output: Path) -> Counts | None:
    """Row counts of the evidence files, for an engine whose JSON does not carry them."""
    import pyarrow.dataset as ds

    found: dict[str, int] = {}
    for name in _COUNT_KEYS:
        paths = sorted(output.rglob(f"{name}.parquet"))
        if not paths:
            return None
        found[name] = ds.dataset(paths[0], format="parquet").count_rows()
    return Counts(**found)


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run_engine(
    engine: str, cmd_for: Callable[[Path], list[str]], repeat: int, timeout: float
) -> EngineResult:
    """Run an engine ``repeat`` times; stop at the first failure and keep its message."""
    result = EngineResult(engine)
    for _ in range(repeat):
        scratch = Path(tempfile.mkdtemp(prefix=f"kalla-bench-{engine}-"))
        try:
            output = scratch / "evidence"  # not created: an engine may refuse an existing folder
            try:
                proc = _measure(cmd_for(output), timeout)
            except OSError as exc:
                result.error = f"could not start: {exc}"
                break
            if proc.timed_out:
                result.error = f"timed out after {timeout:g} s"
                break
            if proc.returncode != 0:
                detail = _tail(proc.stderr) or _tail(proc.stdout) or "(no output)"
                result.error = f"exit code {proc.returncode}: {detail}"
                break
            objects = _json_objects(proc.stdout)
            counts = (_counts_in(objects[-1]) if objects else None) or _counts_from_files(output)
            if counts is None:
                shown = _tail(proc.stdout) or "(no output)"
                result.error = f"no counts in its --json output or evidence files: {shown}"
                break
            if result.counts is not None and counts != result.counts:
                result.error = f"counts changed between runs: {result.counts} then {counts}"
                break
            result.counts = counts
            result.seconds.append(proc.seconds)
            result.peak_rss_mb = max(result.peak_rss_mb or 0.0, proc.peak_rss_mb)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return result


def _kalla_command(explicit: str | None) -> list[str] | None:
    if explicit:
        return shlex.split(explicit)
    local = ROOT / ".venv" / "bin" / "kalla"
    if local.exists():
        return [str(local)]
    found = shutil.which("kalla")
    return [found] if found else None


def _command(engine: str, kalla: list[str], data: BenchData, output: Path) -> list[str]:
    """The command line that makes ``engine`` reconcile ``data`` into ``output``."""
    if engine == "kalla":
        return [*kalla, "run", str(data.recipe), "--output", str(output), "--json"]
    if engine == "kalla-plain":  # the same work as the DuckDB script: no reason columns
        return [*kalla, "run", str(data.recipe), "--output", str(output), "--json", "--no-reasons"]
    return [sys.executable, str(BASELINE), str(data.directory), str(output)]


def _fmt_seconds(result: EngineResult | None) -> str:
    if result is None:
        return "-"
    return f"{result.best:.2f}" if result.best is not None else "FAILED"


def _fmt_rss(result: EngineResult | None) -> str:
    if result is None or result.peak_rss_mb is None:
        return "-"
    return f"{result.peak_rss_mb:,.0f}"


def _table(scenarios: list[Scenario]) -> str:
    header = [
        "shape", "rows", "kalla s", "kalla plain s", "duckdb s",
        "kalla/duckdb", "plain/duckdb", "kalla RSS MB", "duckdb RSS MB", "answers",
    ]  # fmt: skip
    lines = [header]
    for s in scenarios:
        kalla, plain, duck = (s.results.get(e) for e in ("kalla", "kalla-plain", "duckdb"))

        def ratio(r: EngineResult | None, duck: EngineResult | None = duck) -> str:
            if r and duck and r.best is not None and duck.best:
                return f"{r.best / duck.best:.2f}x"
            return "-"

        lines.append(
            [
                s.shape, f"{s.rows:,}", _fmt_seconds(kalla), _fmt_seconds(plain),
                _fmt_seconds(duck), ratio(kalla), ratio(plain), _fmt_rss(kalla), _fmt_rss(duck),
                s.verdict(),
            ]
        )  # fmt: skip
    widths = [max(len(row[c]) for row in lines) for c in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if c in (0, len(header) - 1) else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    )


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("kalla", "datafusion", "pyarrow", "duckdb"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=_parse_rows,
        default=[10_000, 100_000, 1_000_000],
        help="comma-separated invoice counts, k/M suffixes allowed",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine; the best is kept")
    parser.add_argument(
        "--shapes",
        default="one_to_one",
        help=f"comma-separated, from {', '.join(SHAPES)}, or 'all'",
    )
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="csv")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--engines",
        default="kalla,kalla-plain,duckdb",
        help="comma-separated: kalla, kalla-plain (kalla --no-reasons), duckdb",
    )
    parser.add_argument("--kalla", help="command that runs kalla (default: .venv/bin/kalla)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    shapes = list(SHAPES) if args.shapes == "all" else [s.strip() for s in args.shapes.split(",")]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; use {', '.join(SHAPES)} or all")
    engines = [e.strip() for e in args.engines.split(",")]
    if set(engines) - {"kalla", "kalla-plain", "duckdb"}:
        parser.error("--engines takes kalla, kalla-plain and/or duckdb")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    kalla = _kalla_command(args.kalla)

    scenarios: list[Scenario] = []
    for shape in shapes:
        for rows in args.rows:
            n = max(1, rows // CROSS_DIVISOR) if shape == "cross" else rows
            data = _dataset(shape, n, args.seed, args.fmt)
            results: dict[str, EngineResult] = {}
            for engine in engines:
                print(f"  {shape} {n:,} rows: {engine} ...", file=sys.stderr, flush=True)
                if engine.startswith("kalla") and kalla is None:
                    result = EngineResult(engine, error="no kalla command found")
                else:
                    command = partial(_command, engine, kalla or [], data)
                    result = _run_engine(engine, command, args.repeat, args.timeout)
                if result.error:
                    print(f"    {engine} FAILED: {result.error}", file=sys.stderr)
                elif result.counts != data.expected:
                    print(
                        f"    {engine} WRONG ANSWER: {result.counts}, expected {data.expected}",
                        file=sys.stderr,
                    )
                results[engine] = result
            scenarios.append(Scenario(shape, n, data.right_rows, data.expected, results))

    print(_table(scenarios))
    if args.json:
        document = {
            "versions": _versions(),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "repeat": args.repeat,
            "format": args.fmt,
            "seed": args.seed,
            "scenarios": [
                {
                    **asdict(s),
                    "verdict": s.verdict(),
                    "best_seconds": {name: r.best for name, r in s.results.items()},
                }
                for s in scenarios
            ],
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return 0 if all(s.verdict() == "ok" for s in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
