"""Property-based requests from the API's own OpenAPI schema (schemathesis), against a real worker.

Every public operation (the dashboard's HTML pages and the Prometheus text are
left out) gets requests that schemathesis generates from the schema, valid and
not, with a good API key and the admin key, so that bodies get past
authentication and are really validated. Each answer must be no 5xx, and every
error must be in OpenAI's shape ``{"error": {"message", "type", "code"}}``.
Bounded in time: ``FUZZ_SECONDS`` (default 45) for the whole pass, and at most
``FUZZ_EXAMPLES`` requests per operation.
"""

from __future__ import annotations

import os
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

BUDGET = float(os.environ.get("FUZZ_SECONDS", "45"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
SKIPPED = ("/dashboard", "/metrics")


@pytest.fixture(scope="module")
def fuzz_net(tmp_path_factory, subnet_factory):
    net = subnet_factory(tmp_path_factory.mktemp("fuzz"), behaviours=["good"], api_workers=1,
                         extra_env={"MINER_CHUNK_DELAY": "0"})
    yield net
    net.stop()


def openai_error_shape(ctx, response, case) -> None:
    """Every error answer is ``{"error": {"message": str, "type": str, "code": …}}``."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except Exception:
        raise AssertionError(f"{response.status_code} answer is not JSON: {response.text[:200]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict) and {"message", "type", "code"} <= set(error), f"not OpenAI's shape: {body!r:.300}"
    assert isinstance(error["message"], str) and isinstance(error["type"], str), body


def test_no_generated_request_gets_a_5xx_or_a_foreign_error_shape(fuzz_net):
    key = fuzz_net.create_api_key("fuzz")
    headers = {"api-key": key, "admin-key": fuzz_net.admin_key}
    schema = schemathesis.openapi.from_url(fuzz_net.api_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if not op.path.startswith(SKIPPED)]
    assert len(operations) >= 15  # the public routes are all there
    deadline = time.monotonic() + BUDGET
    counts = {}

    for operation in operations:
        if time.monotonic() >= deadline:
            break

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            if time.monotonic() >= deadline:
                return
            response = case.call(headers=headers, timeout=30)
            counts[operation.label] = counts.get(operation.label, 0) + 1
            case.validate_response(response, checks=[not_a_server_error, openai_error_shape])

        fuzz()
    print(f"fuzzed {len(counts)} operations with {sum(counts.values())} requests")
    assert sum(counts.values()) >= len(operations), counts
