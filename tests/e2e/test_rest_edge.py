"""What Envoy answers itself on REST paths: Cairn's OpenAPI document, 405 for a known path called
with a method it lacks, and undeclared query parameters ignored (as Golem's servers do)."""

from __future__ import annotations

import httpx
import pytest
import yaml

from cairn.stack.envoy_config import OPENAPI_DOCUMENT
from tests.e2e.conftest import RunningStack, exact

pytestmark = pytest.mark.e2e


def test_the_openapi_document_is_served_without_credentials(stack: RunningStack) -> None:
    reply = httpx.get(f"{stack.base_url}/openapi.yaml")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/yaml"
    assert reply.content == OPENAPI_DOCUMENT.read_bytes()
    assert yaml.safe_load(reply.text)["openapi"].startswith("3.")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/v1/projects/default", "DELETE, GET"),
        ("PATCH", "/v1/components", "GET, POST"),
        ("DELETE", "/v1/components/00000000-0000-0000-0000-000000000000/latest", "GET"),
        ("PUT", "/v1/accounts", "POST"),
        ("POST", "/v1/projects/x/nothing", None),  # not a known path: still 404
    ],
)
def test_a_known_path_with_another_method_is_405_with_allow(
    stack: RunningStack, method: str, path: str, allow: str | None
) -> None:
    # No credentials: routing comes first, as in Golem's servers.
    if allow is None:
        auth = {"Authorization": f"Bearer {stack.root_token}"}
        assert httpx.request(method, f"{stack.base_url}{path}", headers=auth).status_code == 404
        return
    reply = httpx.request(method, f"{stack.base_url}{path}")
    assert reply.status_code == 405
    assert reply.headers["allow"] == allow
    assert reply.text == exact({"error": "Method Not Allowed"})


def test_ledger_paths_answer_405_in_the_ledger_error_shape(stack: RunningStack) -> None:
    reply = httpx.delete(f"{stack.base_url}/v1/create")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
    assert reply.json() == {"status": 405, "errors": ["Method Not Allowed"]}


def test_undeclared_query_parameters_are_ignored(stack: RunningStack) -> None:
    auth = {"Authorization": f"Bearer {stack.root_token}"}
    plain = httpx.get(f"{stack.base_url}/v1/projects/default", headers=auth)
    extra = httpx.get(f"{stack.base_url}/v1/projects/default?foo=bar&x=1", headers=auth)
    assert plain.status_code == extra.status_code == 200
    assert extra.json() == plain.json()
    listed = httpx.get(f"{stack.base_url}/v1/projects?project-name=none&foo=bar", headers=auth)
    assert listed.status_code == 200
    assert listed.json() == []


def test_bad_query_values_do_not_name_protobuf_internals(stack: RunningStack) -> None:
    auth = {"Authorization": f"Bearer {stack.root_token}"}
    zero = "00000000-0000-0000-0000-000000000000"
    bad = httpx.get(f"{stack.base_url}/v1/components/{zero}/download?version=abc", headers=auth)
    assert bad.status_code == 400
    assert bad.text == exact({"errors": ['version: invalid value "abc"']})
    twice = httpx.get(f"{stack.base_url}/v1/projects?project-name=a&project-name=b", headers=auth)
    assert twice.status_code == 400
    assert twice.text == exact({"errors": ["a query parameter was given more than once"]})


def test_headers_grpc_cannot_carry_are_dropped_not_fatal(stack: RunningStack) -> None:
    # Legal HTTP, illegal gRPC metadata: a `*` in a name, a tab in a value.
    headers = [("Authorization", f"Bearer {stack.root_token}"), ("N*ly'x", "http"),
               ("ok-name", "a\tb"), ("x-fine", "kept")]
    reply = httpx.get(f"{stack.base_url}/v1/projects/default", headers=headers)
    assert reply.status_code == 200, reply.text
