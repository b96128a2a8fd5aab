"""Cairn's OpenAPI document against the live stack (schemathesis): every operation it describes
is called with generated and seeded inputs, and every answer must have a documented status, a
documented content type and a body matching the documented schema; no 5xx.

Bounded for `make test` (`CAIRN_OPENAPI_EXAMPLES` generated examples per operation, default 4,
no coverage phase); `make conformance` runs more, with the coverage phase, and also runs Golem's
own document (docs/openapi.md has the numbers).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cairn.stack.envoy_config import OPENAPI_DOCUMENT

from .conftest import RunningStack
from .openapi_seeds import Seeds, count, make_seeds, summary

pytestmark = pytest.mark.e2e
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = int(os.environ.get("CAIRN_OPENAPI_EXAMPLES", "4"))
# Schemathesis's coverage phase (boundary values, missing and malformed parameters, undeclared
# methods: about 20 more calls per operation) runs in `make conformance`, not in `make test`.
COVERAGE = os.environ.get("CAIRN_OPENAPI_COVERAGE", "") == "1"


@pytest.fixture(scope="module")
def seeds(stack: RunningStack, shared_fixtures: Path) -> Iterator[Seeds]:
    made = make_seeds(stack.base_url, stack.root_token,
                      shared_fixtures / "golem" / "wasm" / "rust-echo.wasm")
    yield made
    summary("Cairn's OpenAPI document", made)


document = schemathesis.openapi.from_path(OPENAPI_DOCUMENT)
document.config.phases.coverage.enabled = COVERAGE


@document.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_cairn_document(case: Case, stack: RunningStack, seeds: Seeds) -> None:
    seeds.apply(case)
    response = case.call_and_validate(
        base_url=stack.base_url, headers=seeds.headers(case), checks=CHECKS, timeout=60
    )
    count(seeds, response.status_code)
