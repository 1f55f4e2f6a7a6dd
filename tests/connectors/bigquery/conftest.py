"""The BigQuery stand-in (bqemulator, REST + Storage Read API) for this worker."""

from __future__ import annotations

import pytest

from tests.connectors.bigquery.emulator import BqEmulator, shared


@pytest.fixture(scope="session")
def bq() -> BqEmulator:
    return shared()


@pytest.fixture
def bq_env(bq: BqEmulator, monkeypatch: pytest.MonkeyPatch) -> BqEmulator:
    """``KALLA_BIGQUERY_*`` pointing at the emulator (the engine passes connectors no options)."""
    for key, value in bq.env().items():
        monkeypatch.setenv(key, value)
    return bq
