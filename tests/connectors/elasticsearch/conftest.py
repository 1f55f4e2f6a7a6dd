"""The Elasticsearch stand-in (noida-db) for this worker."""

from __future__ import annotations

import pytest

from tests.connectors.elasticsearch.server import EsServer, shared


@pytest.fixture(scope="session")
def es() -> EsServer:
    return shared()
