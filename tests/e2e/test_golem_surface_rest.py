"""The rest of Golem's Dec 2024 surface through the real Envoy: health and version, the admin
account listing, resource limits, the plugin registry and project-level plugin installations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e
ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def root(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=60,
                      headers={"Authorization": f"Bearer {stack.root_token}"}) as client:
        yield client


def ok(reply: httpx.Response) -> Any:
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    return reply.json()


def error(reply: httpx.Response, status: int) -> Any:
    assert reply.status_code == status, reply.text
    return reply.json()


def new_account(root: httpx.Client, name: str) -> tuple[str, httpx.Client]:
    account = ok(root.post("/v1/accounts", json={"name": name, "email": f"{name}@example.com"}))
    secret = ok(root.post(f"/v1/accounts/{account['id']}/tokens", json={}))["secret"]["value"]
    client = httpx.Client(base_url=str(root.base_url), timeout=60,
                          headers={"Authorization": f"Bearer {secret}"})
    return account["id"], client


def new_project(client: httpx.Client, owner: str) -> str:
    return str(ok(client.post("/v1/projects", json={
        "name": f"p-{uuid.uuid4().hex[:8]}", "ownerAccountId": owner, "description": "e2e"}
    ))["projectId"])


def plugin(name: str, version: str = "1", scope: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "version": version, "description": "a plugin", "icon": [137, 80],
            "homepage": "https://example.com",
            "specs": {"type": "ComponentTransformer", "validateUrl": "https://v",
                      "transformUrl": "https://t"},
            "scope": scope or {"type": "Global"}}


def test_healthcheck_and_version_need_no_credentials(stack: RunningStack) -> None:
    health = httpx.get(f"{stack.base_url}/healthcheck")
    assert (health.status_code, health.text) == (200, "{}")
    version = httpx.get(f"{stack.base_url}/version")
    assert version.status_code == 200
    assert version.json() == {"version": "0.1.0"}


def test_admin_account_listing_newest_first(root: httpx.Client) -> None:
    before = ok(root.get("/v1/admin/accounts/count"))
    assert isinstance(before, int) and before >= 1
    first, first_client = new_account(root, f"sum-{uuid.uuid4().hex[:6]}")
    second, second_client = new_account(root, f"sum-{uuid.uuid4().hex[:6]}")
    assert ok(root.get("/v1/admin/accounts/count")) == before + 2
    page = ok(root.get("/v1/admin/accounts", params={"skip": 0, "limit": 2}))
    assert [a["id"] for a in page] == [second, first]
    assert set(page[0]) == {"id", "name", "email", "componentCount", "workerCount", "createdAt"}
    assert (page[0]["componentCount"], page[0]["workerCount"]) == (0, 0)
    assert ok(root.get("/v1/admin/accounts", params={"skip": 1, "limit": 1}))[0]["id"] == first
    assert ok(root.get("/v1/admin/accounts", params={"skip": -5, "limit": 1}))[0]["id"] == second
    assert ok(root.get("/v1/admin/accounts", params={"skip": 0, "limit": -1})) == []
    assert error(root.get("/v1/admin/accounts"), 400) == {
        "errors": ["Missing query parameter: skip", "Missing query parameter: limit"]}
    denied = second_client.get("/v1/admin/accounts/count")
    assert (denied.status_code, denied.text) == (
        401, exact({"error": "Action is only allowed for [Admin, MarketingAdmin]"}))
    ok(root.put(f"/v1/accounts/{second}/grants/MarketingAdmin"))
    assert ok(second_client.get("/v1/admin/accounts/count")) == before + 2
    first_client.close()
    second_client.close()


def test_resource_limits(root: httpx.Client) -> None:
    account, client = new_account(root, f"lim-{uuid.uuid4().hex[:6]}")
    limits = ok(client.get("/v1/resource-limits", params={"account-id": account}))
    assert limits == {"availableFuel": 10**12, "maxMemoryPerWorker": 100 * 1024 * 1024}
    assert ok(root.post("/v1/resource-limits", json={"updates": {account: 1000}})) == {}
    assert ok(client.get("/v1/resource-limits", params={"account-id": account}))[
        "availableFuel"] == 10**12 - 1000
    denied = client.get("/v1/resource-limits", params={"account-id": "root"})
    assert denied.status_code == 401
    assert error(root.get("/v1/resource-limits", params={"account-id": "nobody"}), 400) == {
        "errors": ["Account Not Found: nobody"]}
    assert error(root.get("/v1/resource-limits"), 400) == {
        "errors": ["Missing query parameter: account-id"]}
    # All or nothing: an unknown account in the batch records nothing.
    error(root.post("/v1/resource-limits", json={"updates": {account: 5, "nobody": 1}}), 400)
    error(root.post("/v1/resource-limits", json={"updates": {account: 2**63 - 1}}), 400)
    assert ok(client.get("/v1/resource-limits", params={"account-id": account}))[
        "availableFuel"] == 10**12 - 1000
    assert error(root.post("/v1/resource-limits", json={}), 400) == {
        "errors": ["Missing field: updates"]}
    client.close()


def test_plugin_registry(root: httpx.Client) -> None:
    account, client = new_account(root, f"plug-{uuid.uuid4().hex[:6]}")
    project = new_project(client, account)
    assert ok(client.get("/v1/plugins")) == []
    assert ok(client.post("/v1/plugins", json=plugin("tracer", "1"))) == {}
    assert ok(client.post("/v1/plugins", json=plugin("tracer", "2", {
        "type": "Project", "projectId": project}))) == {}
    assert ok(client.post("/v1/plugins", json=plugin("other", "1", {
        "type": "Component", "componentId": ZERO}))) == {}
    assert error(client.post("/v1/plugins", json=plugin("tracer", "1")), 409) == {
        "error": "Plugin already exists: tracer@1"}
    listed = ok(client.get("/v1/plugins"))
    assert [(p["name"], p["version"]) for p in listed] == [
        ("tracer", "1"), ("tracer", "2"), ("other", "1")]
    assert listed[0] == {**plugin("tracer", "1"), "owner": {"accountId": account},
                         "specs": {"type": "ComponentTransformer", "providedWitPackage": None,
                                   "jsonSchema": None, "validateUrl": "https://v",
                                   "transformUrl": "https://t"}}
    assert [p["version"] for p in ok(client.get("/v1/plugins/tracer"))] == ["1", "2"]
    assert ok(client.get("/v1/plugins/tracer/2"))["scope"] == {
        "type": "Project", "projectId": project}
    by_scope = {
        scope: [(p["name"], p["version"]) for p in ok(client.get("/v1/plugins",
                                                                 params={"scope": scope}))]
        for scope in ("global", f"project:{project}", f"component:{ZERO}")
    }
    assert by_scope == {"global": [("tracer", "1")],
                        f"project:{project}": [("tracer", "1"), ("tracer", "2")],
                        f"component:{ZERO}": [("tracer", "1"), ("other", "1")]}
    assert error(client.get("/v1/plugins", params={"scope": "everywhere"}), 400)["errors"]
    # Each account sees only its own plugins.
    assert ok(root.get("/v1/plugins/tracer")) == []
    assert error(root.get("/v1/plugins/tracer/1"), 404) == {"error": "Plugin not found"}
    bad = error(client.post("/v1/plugins", json={"name": "x", "scope": {"type": "Nowhere"}}), 400)
    assert "Missing field: version" in bad["errors"]
    assert ok(client.delete("/v1/plugins/tracer/1")) == {}
    assert error(client.delete("/v1/plugins/tracer/1"), 404) == {"error": "Plugin not found"}
    assert [p["version"] for p in ok(client.get("/v1/plugins/tracer"))] == ["2"]
    client.close()


def test_project_plugin_installations(root: httpx.Client) -> None:
    owner, client = new_account(root, f"inst-{uuid.uuid4().hex[:6]}")
    grantee, grantee_client = new_account(root, f"gr-{uuid.uuid4().hex[:6]}")
    project = new_project(client, owner)
    elsewhere = new_project(client, owner)
    base = f"/v1/projects/{project}/plugins/installs"
    assert ok(client.get(base)) == []
    body = {"name": "tracer", "version": "1", "priority": 3, "parameters": {"k": "v"}}
    assert error(client.post(base, json=body), 404) == {"error": "Plugin not found: tracer@1"}
    ok(client.post("/v1/plugins", json=plugin("tracer", "1")))
    ok(client.post("/v1/plugins", json=plugin("scoped", "1", {
        "type": "Project", "projectId": elsewhere})))
    assert error(client.post(base, json={**body, "name": "scoped"}), 401) == {
        "error": f"Plugin scoped@1 not available for project {project}"}
    installed = ok(client.post(base, json=body))
    assert installed == {"id": installed["id"], **body}
    assert ok(client.get(base)) == [installed]
    ok(client.post(f"/v1/projects/{project}/grants", json={
        "granteeAccountId": grantee, "projectActions": ["ViewComponent"]}))
    assert ok(grantee_client.get(base)) == [installed]
    denied = grantee_client.post(base, json=body)
    assert (denied.status_code, denied.json()) == (401, {
        "error": f"Only the owner of project `{project}` or an admin may change its plugin "
                 "installations"})
    target = f"{base}/{installed['id']}"
    assert ok(client.put(target, json={"priority": 9, "parameters": {}})) == {}
    assert ok(client.get(base)) == [{**installed, "priority": 9, "parameters": {}}]
    assert error(client.put(target, json={"parameters": {}}), 400) == {
        "errors": ["Missing field: priority"]}
    removal = f"/v1/projects/{project}/latest/plugins/installs/{installed['id']}"
    assert ok(client.delete(removal)) == {}
    assert error(client.delete(removal), 404) == {
        "error": f"Plugin installation not found: {installed['id']}"}
    assert ok(client.get(base)) == []
    missing = str(uuid.uuid4())
    assert error(client.get(f"/v1/projects/{missing}/plugins/installs"), 404) == {
        "error": f"Project not found: {missing}"}
    client.close()
    grantee_client.close()


def test_policies_refuse_golem_2025_action_names(root: httpx.Client) -> None:
    for name in ("DeleteProject", "CreatePluginInstallation", "ViewPluginInstallations"):
        reply = root.post("/v1/project-policies", json={
            "name": "new", "projectActions": {"actions": ["ViewComponent", name]}})
        assert error(reply, 400) == {"errors": [f"Invalid project action: {name!r}"]}
