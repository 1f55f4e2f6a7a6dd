"""Schemathesis fuzzes the runner through its own /openapi.json: no answer is a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from .conftest import Runner


@pytest.fixture(scope="module")
def fuzz_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    runner = Runner(tmp_path_factory.mktemp("fuzz"), ["--max-request-bytes", "65536"], {})
    runner.start()
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_runner: Runner) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_runner.url}/openapi.json")


def test_no_server_errors(api_schema: Any) -> None:
    # Driven by hand rather than by schemathesis' pytest plugin: its fixture support
    # relies on a pytest internal (Item._nodeid) that pytest 9 no longer has.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 5
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_5xx(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=10)

        no_5xx()
