"""POST /api/jobs end to end, idempotency, and every 4xx, against a real server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import Receiver, Runner, job_body, write_sources


def test_happy_path_evidence_and_callbacks(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner()
    body = job_body(*sources, receiver.url)
    run_id = body["run_id"]

    response = runner.post_job(body)
    assert response.status_code == 202, response.text
    assert response.json() == {"run_id": run_id, "status": "accepted"}

    done = receiver.wait_for("complete", run_id)
    assert done["matched_count"] == 2
    assert done["unmatched_left_count"] == 1
    assert done["unmatched_right_count"] == 1
    run_dir = runner.evidence / "runs" / run_id
    assert done["output_paths"] == {
        "matched": str(run_dir / "matched.parquet"),
        "unmatched_left": str(run_dir / "unmatched_left.parquet"),
        "unmatched_right": str(run_dir / "unmatched_right.parquet"),
    }
    # The files existed when the callback arrived, not just later.
    assert receiver.call("complete", run_id)["files_exist"] == {
        "matched": True,
        "unmatched_left": True,
        "unmatched_right": True,
    }
    assert pq.read_table(done["output_paths"]["matched"]).num_rows == 2
    assert (run_dir / "metadata.json").is_file()

    status = runner.wait_state(run_id, "completed")
    assert status["result"] == done
    assert status["error"] is None and status["attempts"] == 1

    progress = receiver.received("progress", run_id)
    stages = [p["stage"] for p in progress]
    assert "staging" in stages and "matching" in stages and "writing_results" in stages
    assert {p["source"] for p in progress if p["stage"] == "staging"} >= {"left_src", "right_src"}
    assert any(p.get("matched_count") == 2 for p in progress if p["stage"] == "matching")
    assert not receiver.received("error", run_id)

    metrics = runner.metrics()
    assert metrics["kalla_runner_jobs_completed_total"] == 1
    assert metrics['kalla_runner_callback_attempts_total{kind="complete"}'] >= 1


def test_same_body_is_idempotent_other_body_conflicts(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner()
    body = job_body(*sources, receiver.url)
    assert runner.post_job(body).status_code == 202
    again = runner.post_job(body)
    assert again.status_code == 200
    assert again.json() == {"run_id": body["run_id"], "status": "accepted"}

    other = runner.post_job({**body, "match_sql": body["match_sql"] + " WHERE i.amount > 1"})
    assert other.status_code == 409
    assert other.json()["code"] == "run_id_conflict"

    receiver.wait_for("complete", body["run_id"])
    assert runner.post_job(body).status_code == 200  # still the same answer once completed
    assert len(receiver.received("complete", body["run_id"])) == 1


@pytest.fixture
def api_runner(shared_runner: Runner) -> Runner:
    return shared_runner


def _posted(runner: Runner, tmp_path: Path, **changes: object) -> tuple[int, dict]:
    inv, pay = write_sources(runner.evidence / "data")
    body = job_body(inv, pay, "http://127.0.0.1:9/cb")
    body.update(changes)
    response = runner.post_job(body)
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"match_sql": "DELETE FROM left_src"}, 400, "match_sql_forbidden"),
        ({"match_sql": "SELECT 1; SELECT 2"}, 400, "match_sql_forbidden"),
        ({"callback_url": "http://169.254.169.254/latest"}, 400, "callback_host_not_allowed"),
        ({"callback_url": "file:///etc/passwd"}, 400, "callback_host_not_allowed"),
        ({"output_path": "../outside"}, 400, "output_path_invalid"),
        ({"output_path": "/tmp/abs"}, 400, "output_path_invalid"),
        ({"callback_url": None}, 422, "request_invalid"),
        ({"run_id": "not-a-uuid"}, 422, "request_invalid"),
        ({"sources": []}, 422, "request_invalid"),
    ],
)
def test_refused_jobs(
    api_runner: Runner, tmp_path: Path, changes: dict, status: int, code: str
) -> None:
    got_status, got = _posted(api_runner, tmp_path, **changes)
    assert (got_status, got["code"]) == (status, code), got
    assert got["error"]


def test_source_outside_roots_and_unknown_scheme(api_runner: Runner, tmp_path: Path) -> None:
    inv, pay = write_sources(tmp_path / "elsewhere")
    response = api_runner.post_job(job_body(inv, pay, "http://127.0.0.1:9/cb"))
    assert response.status_code == 400
    assert response.json()["code"] == "source_not_allowed"

    inside = api_runner.evidence / "data"
    (inside / "link.csv").parent.mkdir(parents=True, exist_ok=True)
    (inside / "link.csv").symlink_to(inv)  # a symlink inside the root pointing out of it
    response = api_runner.post_job(job_body(inside / "link.csv", pay, "http://127.0.0.1:9/cb"))
    assert response.json()["code"] == "source_not_allowed"

    response = api_runner.post_job(job_body("ftp://host/x.csv", pay, "http://127.0.0.1:9/cb"))
    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_uri"


def test_body_too_large_and_unknown_job(api_runner: Runner) -> None:
    response = api_runner.request(
        "POST",
        "/api/jobs",
        content=b"{" + b" " * 5000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit still holds
        for _ in range(10):
            yield b" " * 1000

    response = api_runner.request(
        "POST", "/api/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413

    missing = api_runner.request("GET", f"/api/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["code"] == "job_not_found"
    assert api_runner.request("DELETE", f"/api/jobs/{uuid.uuid4()}").status_code == 404


def test_api_token(start_runner: Callable[..., Runner], tmp_path: Path) -> None:
    runner = start_runner(env={"KALLA_API_TOKEN": "tok-123"})
    inv, pay = write_sources(runner.evidence / "data")
    body = job_body(inv, pay, "http://127.0.0.1:9/cb")
    assert runner.post_job(body).status_code == 401
    wrong = runner.post_job(body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert runner.request("GET", f"/api/jobs/{body['run_id']}").status_code == 401
    ok = runner.post_job(body, headers={"Authorization": "Bearer tok-123"})
    assert ok.status_code == 202
    # Probes stay open for orchestrators.
    assert runner.request("GET", "/health").status_code == 200
    assert runner.request("GET", "/ready").status_code == 200


def test_openapi_documents_every_model(start_runner: Callable[..., Runner]) -> None:
    runner = start_runner()
    spec = runner.request("GET", "/openapi.json").json()
    schemas = set(spec["components"]["schemas"])
    assert {
        "RunnerJobRequest",
        "JobAccepted",
        "JobStatus",
        "ErrorBody",
        "ReadyStatus",
        "StagingProgress",
        "MatchingProgress",
        "WritingProgress",
        "CompletionCallback",
        "ErrorCallback",
    } <= schemas
    callbacks = spec["paths"]["/api/jobs"]["post"]["callbacks"]
    assert len(callbacks) == 3
    assert set(spec["paths"]) >= {
        "/api/jobs",
        "/api/jobs/{run_id}",
        "/health",
        "/ready",
        "/metrics",
    }
