"""Session fixtures: a real PostgreSQL cluster and a real S3 server per test worker."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.connectors.servers import PgServer, S3Server


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    server = PgServer.start()
    yield server
    server.stop()


@pytest.fixture
def pg_conn(pg: PgServer) -> Iterator[psycopg.Connection]:
    """An autocommit psycopg connection for setting tables up (kalla itself reads with ADBC)."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    server = S3Server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The standard AWS_* variables pointing at the test server."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop this worker's shared stand-in servers here, not only at interpreter exit.

    pytest-xdist workers do not always run ``atexit`` handlers, which left emulators behind.
    """
    import sys

    for name in ("tests.connectors.bigquery.emulator", "tests.connectors.elasticsearch.server"):
        module = sys.modules.get(name)
        server = getattr(module, "_SHARED", None) if module else None
        if server is not None:
            server.stop()
            module._SHARED = None  # type: ignore[union-attr]
