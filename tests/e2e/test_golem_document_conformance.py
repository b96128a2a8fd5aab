"""Golem's own OpenAPI document of Dec 2024 against Cairn (`make conformance`, not `make test`).

Its account, token, login, project, grant, policy, plugin, limits, health and component families
(not the worker and API gateway ones Cairn does not serve), run by schemathesis with the same
checks and seeds as Cairn's own document, on a stack whose logins go to a local GitHub-compatible
provider (so the login routes answer as Golem's do instead of "logins disabled"). The differences
that remain are mistakes of Golem's document; docs/openapi.md lists them with the evidence, and
`correct_golem_document` applies exactly those corrections to the document before the run, so the
run reports every other difference.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case

from tests.conftest import SHARED_FIXTURES

from .conftest import RunningStack
from .openapi_seeds import Seeds, count, make_seeds, summary
from .test_auth_login import github, login_stack  # noqa: F401  (fixtures)
from .test_openapi_conformance import CHECKS, COVERAGE

pytestmark = [pytest.mark.e2e, pytest.mark.conformance]
GOLEM_DOCUMENT = "golem-cloud-openapi-2024-12.yaml"
FAMILIES = ["HealthCheck", "Account", "AccountSummary", "Grant", "Limits", "Token", "Login",
            "Project", "ProjectGrant", "ProjectPolicy", "Component", "Plugin"]
EXAMPLES = int(os.environ.get("CAIRN_OPENAPI_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def golem_seeds(
    login_stack: RunningStack,  # noqa: F811
    shared_fixtures: Path,
) -> Iterator[Seeds]:
    made = make_seeds(login_stack.base_url, login_stack.root_token,
                      shared_fixtures / "golem" / "wasm" / "rust-echo.wasm")
    yield made
    summary("Golem's Dec 2024 document (corrected as docs/openapi.md says)", made)


# Optional fields Golem's servers write as `null` (poem-openapi objects without
# `skip_serializing_if_is_none`; golem @ 3da0e579 golem-common/src/model/component_metadata.rs
# `LinearMemory`, .../plugin.rs `ComponentTransformerDefinition`, ...), not marked nullable.
NULL_WHEN_ABSENT = {
    "LinearMemory": ["maximum"],
    "AnalysedFunctionResult": ["name"],
    "NameOptionTypePair": ["typ"],
    "TypeResult": ["ok", "err"],
    "ComponentTransformerDefinition": ["providedWitPackage", "jsonSchema"],
}


def correct_golem_document(raw: dict[str, Any]) -> dict[str, Any]:
    """Golem's document with its mistakes (docs/openapi.md) corrected, nothing else changed."""
    schemas = raw["components"]["schemas"]
    for name, fields in NULL_WHEN_ABSENT.items():
        for field in fields:
            prop = schemas[name]["properties"][field]
            nullable = {"allOf": [prop]} if "$ref" in prop else dict(prop)
            schemas[name]["properties"][field] = {**nullable, "nullable": True}
    # poem answers 400 for a missing or unparsable required query parameter (skip, limit).
    raw["paths"]["/v1/admin/accounts"]["get"]["responses"]["400"] = {
        "description": "", "content": {"application/json; charset=utf-8": {
            "schema": {"$ref": "#/components/schemas/ErrorsBody"}}}}
    # The server parses `scope` as `global` | `component:<id>` | `project:<id>`.
    for parameter in raw["paths"]["/v1/plugins"]["get"]["parameters"]:
        if parameter["name"] == "scope":
            parameter["schema"] = {"type": "string"}
    return raw


document = schemathesis.openapi.from_dict(
    correct_golem_document(
        yaml.safe_load((SHARED_FIXTURES.parent / "spec" / GOLEM_DOCUMENT).read_text())
    )
).include(tag=FAMILIES)
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
def test_golem_document(
    case: Case, login_stack: RunningStack, golem_seeds: Seeds  # noqa: F811
) -> None:
    golem_seeds.apply(case)
    response = case.call_and_validate(
        base_url=login_stack.base_url, headers=golem_seeds.headers(case), checks=CHECKS, timeout=60
    )
    count(golem_seeds, response.status_code)
