"""Golem's own OpenAPI document of Dec 2024 against Cairn (`make conformance`, not `make test`).

Its account, token, login, project, grant, policy, plugin, limits, health and component families
(not the worker and API gateway ones Cairn does not serve), run by schemathesis with the same
checks and seeds as Cairn's own document, on a stack whose logins go to a local GitHub-compatible
provider (so the login routes answer as Golem's do instead of "logins disabled"). The differences
that remain are mistakes of Golem's document; docs/openapi.md lists them with the evidence, and
`KNOWN_DOCUMENT_MISTAKES` skips exactly those failures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case

from tests.conftest import SHARED_FIXTURES

from .conftest import RunningStack
from .openapi_seeds import Seeds, make_seeds
from .test_auth_login import github, login_stack  # noqa: F401  (fixtures)
from .test_openapi_conformance import CHECKS

pytestmark = [pytest.mark.e2e, pytest.mark.conformance]
GOLEM_DOCUMENT = "golem-cloud-openapi-2024-12.yaml"
FAMILIES = ["HealthCheck", "Account", "AccountSummary", "Grant", "Limits", "Token", "Login",
            "Project", "ProjectGrant", "ProjectPolicy", "Component", "Plugin"]
EXAMPLES = int(os.environ.get("CAIRN_OPENAPI_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def golem_seeds(login_stack: RunningStack, shared_fixtures: Path) -> Seeds:  # noqa: F811
    return make_seeds(login_stack.base_url, login_stack.root_token,
                      shared_fixtures / "golem" / "wasm" / "rust-echo.wasm")


document = schemathesis.openapi.from_path(SHARED_FIXTURES.parent / "spec" / GOLEM_DOCUMENT).include(
    tag=FAMILIES
)


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
    case.call_and_validate(base_url=login_stack.base_url, headers=golem_seeds.headers(case),
                           checks=CHECKS, timeout=60)
