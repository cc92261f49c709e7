"""schemathesis against the running api's own OpenAPI document (``/schema/openapi.json``).

At least 500 generated requests, valid and invalid, over every documented operation, against
the real api process and a real nats-server. What a client would notice, and what is
checked on every answer: no 5xx, and the status code, content type, headers and body are
the ones the document declares. The rate limit is off so generated posts reach validation
and the broker rather than stopping at 429.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err

from tests.support.nats import NatsServer
from tests.support.services import Api

pytestmark = pytest.mark.drill

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION_AND_MODE = 100
MIN_CASES = 500


@pytest.fixture
def api(nats_server: NatsServer, tmp_path: Path) -> Iterator[Api]:
    service = Api(nats_server.url, tmp_path, LOG_LEVEL="WARNING", ATHENIC_RATE_LIMIT_PER_MINUTE="0").start()
    try:
        yield service
    finally:
        service.terminate()


@pytest.mark.slow
def test_generated_requests_get_no_5xx_and_documented_answers(api: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/schema/openapi.json")
    cases: dict[str, int] = {}

    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # an operation schemathesis cannot read is a defect of the document
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_PER_OPERATION_AND_MODE, deadline=None, database=None,
                      derandomize=True, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def check(case: Case[Any]) -> None:
                # a stream route of a known conversation never ends: read what a timeout allows
                case.call_and_validate(base_url=api.url, checks=CHECKS, timeout=10)
                cases[case.operation.label] = cases.get(case.operation.label, 0) + 1

            # nothing invalid can be said to an operation without inputs
            with contextlib.suppress(Unsatisfiable):
                check()

    total = sum(cases.values())
    print(f"schemathesis: {total} cases over {len(cases)} operations: {cases}")
    assert total >= MIN_CASES
