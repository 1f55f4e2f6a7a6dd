"""A secret planted in source URIs appears in no log, answer, callback, status or metadata."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .conftest import Receiver, Runner, free_port, job_body

SECRET = "PlantedS3cret-7f3a9"


def test_planted_secret_never_leaks(
    start_runner: Callable[..., Runner], receiver: Receiver, sources: tuple[Path, Path]
) -> None:
    runner = start_runner("--log-level", "debug")
    inv, pay = sources
    answers: list[str] = []

    # 1. A job that runs: a file URI carrying a secret-looking query parameter.
    runs = job_body(f"file://{inv}?token={SECRET}", pay, receiver.url)
    response = runner.post_job(runs)
    answers.append(response.text)
    assert response.status_code == 202, response.text
    receiver.wait_for("complete", runs["run_id"])

    # 2. A job that fails: PostgreSQL with a password, nothing listening on the port.
    pg = f"postgres://kalla:{SECRET}@127.0.0.1:{free_port()}/db?table=invoices"
    fails = job_body(pg, pay, receiver.url)
    response = runner.post_job(fails)
    answers.append(response.text)
    if response.status_code == 202:  # the postgres connector is installed
        receiver.wait_for("error", fails["run_id"], timeout=30)
        answers.append(runner.request("GET", f"/api/jobs/{fails['run_id']}").text)

    # 3. Refused at admission: the error message names the URI, redacted.
    refused = job_body(f"ftp://user:{SECRET}@host/x.csv", pay, receiver.url)
    response = runner.post_job(refused)
    assert response.status_code == 400
    answers.append(response.text)
    # 4. Invalid body: the 422 echoes no input.
    bad = job_body(pg, pay, receiver.url)
    bad["sources"][0]["filters"] = [{"column": "x", "op": "between", "value": 1}]
    response = runner.post_job(bad)
    assert response.status_code == 422
    answers.append(response.text)

    answers.append(runner.request("GET", f"/api/jobs/{runs['run_id']}").text)
    answers.append(runner.request("GET", "/metrics").text)
    callbacks = [c["raw"] for c in receiver.calls]
    metadata = [p.read_text() for p in runner.evidence.rglob("metadata.json")]
    assert metadata, "the run wrote metadata.json"

    for where, texts in {
        "answers": answers,
        "callbacks": callbacks,
        "metadata.json": metadata,
        "server log": [runner.logs()],
    }.items():
        for text in texts:
            assert SECRET not in text, f"secret leaked into {where}: {text[:2000]}"
    assert "***" in "".join(metadata)  # the URI is recorded, redacted


def test_unrepresentable_local_paths_are_a_400_not_a_500(shared_runner: Runner) -> None:
    for uri in ("x\x00y.csv", "x\udc1dy.csv"):
        response = shared_runner.request(
            "POST", "/api/sources/preview",
            content=json.dumps({"uri": uri}).encode(), headers={"Content-Type": "application/json"},
        )  # fmt: skip
        # A NUL byte reaches the connector's check (400); a lone surrogate may already fail
        # JSON decoding (422). Never a 500.
        assert response.status_code in (400, 422), response.text
        if "\x00" in uri:
            assert response.json()["code"] == "source_uri_invalid"
