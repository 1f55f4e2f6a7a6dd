"""Runner benchmark: POST → complete-callback latency (10k rows) and throughput (200 small jobs).

Runs a real ``kalla serve`` process on 127.0.0.1 and a callback receiver in this
process (server and client are never the same process). Usage::

    python benchmarks/runner_bench.py [--rows 10000] [--jobs 200] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

SQL = (
    "SELECT i.invoice_id, p.payment_id FROM left_src i JOIN right_src p "
    "ON i.invoice_id = p.reference_number AND tolerance_match(i.amount, p.paid_amount, 0.02)"
)


class Completions:
    """Records when each run's complete (or error) callback arrived."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.cond = threading.Condition()

    def serve(self) -> ThreadingHTTPServer:
        done = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                now = time.perf_counter()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                if self.path.endswith(("/complete", "/error")):
                    with done.cond:
                        done.at.setdefault(body["run_id"], now)
                        if self.path.endswith("/error"):
                            print("job failed:", body, file=sys.stderr)
                        done.cond.notify_all()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def wait(self, run_ids: list[str], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(r in self.at for r in run_ids):
                if not self.cond.wait(max(deadline - time.monotonic(), 0)):
                    raise TimeoutError("callbacks did not all arrive")


def write_data(folder: Path, rows: int) -> tuple[Path, Path]:
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    inv, pay = folder / f"invoices_{rows}.csv", folder / f"payments_{rows}.csv"
    with inv.open("w") as f:
        f.write("invoice_id,customer_id,amount,currency\n")
        for i in range(rows):
            f.write(
                f"INV-{i:06d},CUST-{i % 20 + 1:06d},{rng.randint(10000, 5010000) / 100:.2f},USD\n"
            )
    with pay.open("w") as f, inv.open() as src:
        f.write("payment_id,reference_number,paid_amount\n")
        next(src)
        for i, line in enumerate(src):
            if i % 5 == 4:
                continue  # 20% unpaid invoices
            inv_id, _, amount, _ = line.strip().split(",")
            f.write(f"PAY-{i:06d},{inv_id},{amount}\n")
    return inv, pay


def start_server(root: Path, concurrency: int) -> tuple[subprocess.Popen[bytes], str]:
    log = root / "server.log"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kalla.runner",
                "--port",
                "0",
                "--log-level",
                "warning",
                "--evidence-root",
                str(root / "evidence"),
                "--max-concurrent-jobs",
                str(concurrency),
                "--queue-capacity",
                "1000",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    os.environ.pop("KALLA_LOG_LEVEL", None)
    deadline = time.monotonic() + 60
    url = ""
    while time.monotonic() < deadline:
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            url = m.group(1)
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


def job(inv: Path, pay: Path, callback: str) -> dict[str, object]:
    run_id = str(uuid.uuid4())
    return {
        "run_id": run_id,
        "callback_url": callback,
        "match_sql": SQL,
        "output_path": f"runs/{run_id}",
        "sources": [
            {"alias": "left_src", "uri": str(inv)},
            {"alias": "right_src", "uri": str(pay)},
        ],
        "primary_keys": {"left_src": ["invoice_id"], "right_src": ["payment_id"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        big = write_data(root / "evidence" / "data", args.rows)
        small = write_data(root / "evidence" / "data", 10)
        completions = Completions()
        receiver = completions.serve()
        callback = f"http://127.0.0.1:{receiver.server_address[1]}/cb"
        proc, url = start_server(root, args.concurrency)
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                warm = job(*small, callback)  # first job: workers warm, store open
                client.post("/api/jobs", json=warm).raise_for_status()
                completions.wait([str(warm["run_id"])])

                latencies = []
                for _ in range(args.repeat):
                    body = job(*big, callback)
                    t0 = time.perf_counter()
                    client.post("/api/jobs", json=body).raise_for_status()
                    completions.wait([str(body["run_id"])])
                    latencies.append(completions.at[str(body["run_id"])] - t0)

                bodies = [job(*small, callback) for _ in range(args.jobs)]
                t0 = time.perf_counter()
                for body in bodies:
                    client.post("/api/jobs", json=body).raise_for_status()
                posted = time.perf_counter() - t0
                completions.wait([str(b["run_id"]) for b in bodies])
                elapsed = max(completions.at[str(b["run_id"])] for b in bodies) - t0
        finally:
            proc.terminate()
            proc.wait(60)
            receiver.shutdown()

    print(
        json.dumps(
            {
                "rows": args.rows,
                "concurrency": args.concurrency,
                "latency_s": {
                    "median": round(statistics.median(latencies), 3),
                    "min": round(min(latencies), 3),
                    "max": round(max(latencies), 3),
                },
                "throughput": {
                    "jobs": args.jobs,
                    "posting_s": round(posted, 2),
                    "all_complete_s": round(elapsed, 2),
                    "jobs_per_s": round(args.jobs / elapsed, 1),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
