"""``POST /api/sources/preview`` against a real ``kalla serve`` process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Runner, free_port

SECRET = "PreviewS3cret-41c7"


@pytest.fixture
def data(shared_runner: Runner) -> Path:
    folder = shared_runner.evidence / "data"
    folder.mkdir(exist_ok=True)
    path = folder / "payments.csv"
    lines = ["id,amount,booked,note"] + [
        f"P{i},{i}.50,2026-01-{i % 28 + 1:02d},n{i}" for i in range(1, 1501)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def preview(runner: Runner, body: dict, **kw: object) -> httpx.Response:
    return runner.request("POST", "/api/sources/preview", json=body, **kw)  # type: ignore[arg-type]


def test_preview_answers_typed_columns_and_json_rows(shared_runner: Runner, data: Path) -> None:
    response = preview(
        shared_runner,
        {"uri": str(data), "filters": [{"column": "amount", "op": "gt", "value": "3"}], "limit": 2},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == [
        {"name": "id", "data_type": "string", "nullable": True},
        {"name": "amount", "data_type": "decimal128(18, 2)", "nullable": True},
        {"name": "booked", "data_type": "date32[day]", "nullable": True},
        {"name": "note", "data_type": "string", "nullable": True},
    ]
    assert body["rows"] == [
        {"id": "P3", "amount": "3.50", "booked": "2026-01-04", "note": "n3"},
        {"id": "P4", "amount": "4.50", "booked": "2026-01-05", "note": "n4"},
    ]
    assert body["preview_rows"] == 2


def test_limit_defaults_to_200_and_is_capped(shared_runner: Runner, data: Path) -> None:
    assert preview(shared_runner, {"uri": str(data)}).json()["preview_rows"] == 200
    assert preview(shared_runner, {"uri": str(data), "limit": 10**6}).json()["preview_rows"] == 1000
    bad = preview(shared_runner, {"uri": str(data), "limit": 0})
    assert bad.status_code == 422 and bad.json()["code"] == "request_invalid"


def test_admission_rules_apply(shared_runner: Runner, data: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("id\n1\n")
    cases = {
        str(outside): (400, "source_not_allowed"),
        f"file://{outside}": (400, "source_not_allowed"),
        "ftp://example.com/a.csv": (400, "unsupported_uri"),
        str(data.parent / "missing.csv"): (400, "source_not_found"),
    }
    for uri, (status, code) in cases.items():
        response = preview(shared_runner, {"uri": uri})
        assert (response.status_code, response.json()["code"]) == (status, code), uri
    bad_filter = preview(
        shared_runner, {"uri": str(data), "filters": [{"column": "nope", "op": "eq", "value": 1}]}
    )
    assert (bad_filter.status_code, bad_filter.json()["code"]) == (400, "filter_invalid")


def test_preview_needs_the_token(start_runner: Callable[..., Runner], tmp_path: Path) -> None:
    runner = start_runner(env={"KALLA_API_TOKEN": "tok-123"})
    path = runner.evidence / "a.csv"
    path.write_text("id\n1\n")
    denied = preview(runner, {"uri": str(path)})
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    allowed = preview(runner, {"uri": str(path)}, headers={"Authorization": "Bearer tok-123"})
    assert allowed.status_code == 200 and allowed.json()["rows"] == [{"id": 1}]


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung database)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connected = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)
            self.connected.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_slow_preview_blocks_nothing_and_leaks_no_secret(
    shared_runner: Runner, silent_server: SilentServer
) -> None:
    uri = (
        f"postgresql://kalla:{SECRET}@127.0.0.1:{silent_server.port}/db"
        f"?table=t&connect_timeout=2&sslmode=disable"
    )
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.update(r=preview(shared_runner, {"uri": uri})))
    thread.start()
    assert silent_server.connected.wait(20), "the preview never reached the database"
    started = time.monotonic()
    health = shared_runner.request("GET", "/health")  # while the preview waits on the database
    assert health.status_code == 200 and time.monotonic() - started < 1.0
    assert thread.is_alive(), "the preview should still be waiting (connect_timeout=2)"
    thread.join(30)
    response = result["r"]
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "connection_failed"
    refused = preview(
        shared_runner, {"uri": f"postgresql://kalla:{SECRET}@127.0.0.1:{free_port()}/db?table=t"}
    )
    assert refused.status_code == 502
    for text in (response.text, refused.text, shared_runner.logs()):
        assert SECRET not in text
