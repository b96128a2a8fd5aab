"""The Project API through Envoy: documented paths, exact JSON, documented errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e


@pytest.fixture
def root(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.root_token}"}
    ) as client:
        yield client


def new_account(stack: RunningStack, name: str) -> tuple[str, httpx.Client]:
    """An account made by the root admin with the Account API, and a token from the Token API."""
    with httpx.Client(base_url=stack.base_url,
                      headers={"Authorization": f"Bearer {stack.root_token}"}) as root:
        made = root.post("/v1/accounts", json={"name": name, "email": f"{name}@example.com"})
        assert made.status_code == 200, made.text
        account_id = made.json()["id"]
        token = root.post(f"/v1/accounts/{account_id}/tokens", json={})
        assert token.status_code == 200, token.text
    secret = token.json()["secret"]["value"]
    client = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {secret}"})
    return account_id, client


def project_json(project_id: str, name: str, owner: str, description: str, kind: str) -> str:
    return exact({
        "projectId": project_id,
        "projectData": {
            "name": name,
            "ownerAccountId": owner,
            "description": description,
            "defaultEnvironmentId": "default",
            "projectType": kind,
        },
    })


def assert_clean_json(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    for leaked in ("grpc-status", "grpc-message", "x-http-body", "x-http-status"):
        assert leaked not in response.headers


async def test_default_project_and_listing(stack: RunningStack) -> None:
    account, client = new_account(stack, "alice")
    with client:
        first = client.get("/v1/projects/default")
        assert_clean_json(first, 200)
        project_id = first.json()["projectId"]
        expected = project_json(project_id, "default-project", account,
                                f"Default project of the account {account}", "Default")
        assert first.text == expected
        assert client.get("/v1/projects/default").text == expected
        assert client.get("/v1/projects").text == f"[{expected}]"
        assert client.get(f"/v1/projects/{project_id}").text == expected


async def test_create_filter_actions_and_delete(stack: RunningStack) -> None:
    account, client = new_account(stack, "bob")
    with client:
        created = client.post("/v1/projects", json={
            "name": "xxx", "ownerAccountId": account, "description": "A project called xxx"})
        assert_clean_json(created, 200)
        project_id = created.json()["projectId"]
        assert created.text == project_json(project_id, "xxx", account, "A project called xxx",
                                            "NonDefault")
        named = client.get("/v1/projects", params={"project-name": "xxx"})
        assert named.text == f"[{created.text}]"
        assert client.get("/v1/projects", params={"project-name": "none"}).text == "[]"
        actions = client.get(f"/v1/projects/{project_id}/actions")
        assert_clean_json(actions, 200)
        assert actions.json()[:4] == ["ViewComponent", "CreateComponent", "UpdateComponent",
                                      "DeleteComponent"]
        assert len(actions.json()) == 15  # Golem's Dec 2024 ProjectAction, all of it
        assert actions.json()[-1] == "DeleteApiDefinition"
        deleted = client.delete(f"/v1/projects/{project_id}")
        assert_clean_json(deleted, 200)
        assert deleted.text == "{}"
        gone = client.get(f"/v1/projects/{project_id}")
        assert_clean_json(gone, 404)
        assert gone.text == exact({"error": f"Project not found: {project_id}"})


async def test_default_project_cannot_be_deleted(stack: RunningStack) -> None:
    _, client = new_account(stack, "carol")
    with client:
        project_id = client.get("/v1/projects/default").json()["projectId"]
        refused = client.delete(f"/v1/projects/{project_id}")
        assert_clean_json(refused, 400)
        assert refused.text == exact({"errors": ["Cannot delete default project"]})


async def test_accounts_see_only_their_own_projects(stack: RunningStack) -> None:
    alice, alice_client = new_account(stack, "alice")
    _, bob_client = new_account(stack, "bob")
    with alice_client, bob_client:
        private = alice_client.post("/v1/projects", json={
            "name": "private", "ownerAccountId": alice, "description": ""}).json()["projectId"]
        listed = bob_client.get("/v1/projects").json()
        assert private not in {p["projectId"] for p in listed}
        assert all(p["projectData"]["ownerAccountId"] != alice for p in listed)
        denied = bob_client.get(f"/v1/projects/{private}")
        assert_clean_json(denied, 401)
        assert denied.text == exact({"error": f"Access to project `{private}` is not allowed"})
        assert bob_client.delete(f"/v1/projects/{private}").status_code == 401
        foreign = bob_client.post("/v1/projects", json={
            "name": "x", "ownerAccountId": alice, "description": ""})
        assert_clean_json(foreign, 401)


def test_missing_and_bad_tokens_get_401(stack: RunningStack) -> None:
    with httpx.Client(base_url=stack.base_url) as anonymous:
        missing = anonymous.get("/v1/projects")
        assert_clean_json(missing, 401)
        # Envoy's own replies are byte-for-byte the services' compact JSON (no trailing newline).
        assert missing.text == exact({"error": "Unauthorized"})
        unknown = anonymous.get(
            "/v1/projects", headers={"Authorization": f"Bearer {uuid.uuid4()}"})
        assert_clean_json(unknown, 401)
        assert unknown.text == exact({"error": "Invalid Token: Unknown token secret."})
        # A caller cannot assert an identity by sending the internal header itself.
        forged = anonymous.get("/v1/projects", headers={"x-cairn-principal": "e30.abc"})
        assert_clean_json(forged, 401)


def test_unknown_path_malformed_json_and_unknown_parameters(root: httpx.Client) -> None:
    unknown = root.get("/v1/nothing-here")
    assert_clean_json(unknown, 404)
    assert unknown.text == exact({"error": "Could not resolve /v1/nothing-here to a method."})
    malformed = root.post("/v1/projects", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert_clean_json(malformed, 400)
    assert list(malformed.json()) == ["errors"] and len(malformed.json()["errors"]) == 1
    # Golem ignores query parameters it does not declare, and so does Cairn.
    ignored = root.get("/v1/projects", params={"bogus": "1"})
    assert_clean_json(ignored, 200)
    assert ignored.json() == root.get("/v1/projects").json()
    missing = root.post("/v1/projects", json={"name": "only-a-name"})
    assert_clean_json(missing, 400)
    assert missing.json() == {
        "errors": ["Missing field: ownerAccountId", "Missing field: description"]}
    bad_id = root.get("/v1/projects/not-a-uuid")
    assert_clean_json(bad_id, 400)
    assert bad_id.json() == {"errors": ["Invalid project id: 'not-a-uuid' is not a UUID"]}


def test_root_admin_sees_any_project(stack: RunningStack, root: httpx.Client) -> None:
    listed = root.get("/v1/projects")
    assert_clean_json(listed, 200)
    assert listed.json()[0]["projectData"]["ownerAccountId"] == "root"

