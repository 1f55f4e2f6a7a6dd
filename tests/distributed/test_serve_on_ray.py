"""``kalla serve --engine ray``: the runner's jobs run on the Ray cluster; a bad address stops the start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runner.conftest import Receiver, Runner, job_body, write_sources

pytestmark = pytest.mark.xdist_group("ray")

REPO = Path(__file__).resolve().parents[2]


def _loopback_env(tmp_path: Path) -> dict[str, str]:
    """Keep the runner's Ray driver on 127.0.0.1 too (see _ray_node.py)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "from tests.distributed._ray_node import loopback_only\nloopback_only()\n"
    )
    return {"PYTHONPATH": f"{site}:{REPO}"}


def test_jobs_run_on_the_cluster(ray_cluster: str, tmp_path: Path) -> None:
    receiver = Receiver().start()
    runner = Runner(
        tmp_path / "runner", ["--engine", "ray", "--ray-address", ray_cluster, "--ray-partitions", "2"],
        _loopback_env(tmp_path),
    )  # fmt: skip
    try:
        runner.start(timeout=90)
        inv, pay = write_sources(runner.evidence / "in", rows=20)
        body = job_body(inv, pay, receiver.url)
        assert runner.post_job(body).status_code == 202
        done = receiver.wait_for("complete", body["run_id"], timeout=90)
        assert done["matched_count"] == 19 and done["unmatched_left_count"] == 1
        meta = json.loads(
            Path(done["output_paths"]["matched"]).with_name("metadata.json").read_text()
        )
        assert meta["engine"] == "ray"
    finally:
        runner.close()
        receiver.stop()


def test_an_unreachable_cluster_stops_the_start(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kalla.runner", "--port", "0", "--evidence-root", str(tmp_path),
         "--engine", "ray", "--ray-address", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot reach the Ray cluster" in proc.stderr and "cluster_unavailable" in proc.stderr
