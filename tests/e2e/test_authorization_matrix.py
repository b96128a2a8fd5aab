"""The authorization matrix: every Golem REST endpoint x every kind of caller, through Envoy.

Each row of `ROWS` is one endpoint: how to call it in a fresh `World`, which rule guards it, and
what a successful reply must be exactly. The callers are the seven of `CALLERS`. Every cell asserts
the documented status and the exact body; a denied cell's body is the error alone, and success
bodies (lists included) are compared whole, so no cell can leak another account's data.

Rules (Golem's, see docs/auth.md):
* PROJECT(action): owner and admin all actions, a grantee the actions of its grant's policy;
  otherwise 401 "Action `X` is not allowed on project `P`" (or, for plain views, "Access to
  project `P` is not allowed").
* OWNER(what): the project's owner and admins (what no Dec 2024 project action grants); a grantee
  with any action gets 401 "Only the owner of project `P` or an admin may <what>", anyone else
  "Access to project `P` is not allowed".
* ACCOUNT: the account itself or an admin; otherwise 401 "Access to account `A` is not allowed".
* ADMIN: admins only; otherwise 401 "Action is only allowed for [Admin]".
* SUMMARIES: the admin account listing, for Admin and MarketingAdmin; otherwise 401 "Action is
  only allowed for [Admin, MarketingAdmin]".
* SELF: any authenticated caller, on its own data.
* POLICY: the policy's creator, an admin or a holder of a grant using it; otherwise 404.
* PUBLIC: the login bootstrap routes, open to everyone (logins are disabled in this stack: 409).

The Component API rows are PROJECT rows too: the component service asks the project service's
AuthorizeProjectAction, so owner, grants and admin apply there unchanged. New endpoints are one
`Row` each.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.project.model import ALL_ACTIONS, ProjectAction

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e
PLAN_ID = "00000000-0000-0000-0000-000000000000"


class Caller(enum.Enum):
    NO_TOKEN = "no token"
    EXPIRED = "expired token"
    OTHER = "other account"
    GRANTEE_WITH = "grantee with the action"
    GRANTEE_WITHOUT = "grantee without it"
    OWNER = "owner"
    ADMIN = "admin"


CALLERS = tuple(Caller)


class Rule(enum.Enum):
    PROJECT = "project"
    OWNER = "owner"
    SUMMARIES = "summaries"
    ACCOUNT = "account"
    ADMIN = "admin"
    SELF = "self"
    POLICY = "policy"
    PUBLIC = "public"


@dataclass
class World:
    """A fresh owner with a shared project, two grantees, a stranger, and their tokens."""

    client: httpx.Client
    root_token: str
    secrets: dict[Caller, str]
    ids: dict[Caller, str]
    project_id: str
    grant_with_id: str
    grant_without_id: str
    policy_with_id: str
    policy_without_id: str
    bystander_id: str
    bystander_grant_id: str
    extra_token: dict[str, Any]
    expired_token: dict[str, Any]
    first_owner_token: dict[str, Any]
    grant_actions: tuple[ProjectAction, ...]
    without_actions: tuple[ProjectAction, ...]
    # The owner's component in the shared project (component rows only) and its binary.
    component: dict[str, Any] | None = None
    wasm: bytes = b""

    @property
    def component_id(self) -> str:
        assert self.component is not None
        return str(self.component["versionedComponentId"]["componentId"])

    def sees_shared_project(self, caller: Caller) -> bool:
        """The owner and grantees whose policy has any action see the shared project."""
        return caller is Caller.OWNER or caller is Caller.GRANTEE_WITH or (
            caller is Caller.GRANTEE_WITHOUT and bool(self.without_actions)
        )

    def call(self, caller: Caller, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if caller in self.secrets:
            headers["Authorization"] = f"Bearer {self.secrets[caller]}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def as_root(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.root_token}"}
        reply = self.client.request(method, path, headers=headers, **kwargs)
        assert reply.status_code == 200, (method, path, reply.text)
        return reply

    def default_project(self, caller: Caller) -> dict[str, Any]:
        reply = self.call(caller, "GET", "/v1/projects/default")
        assert reply.status_code == 200
        return dict(reply.json())

    def project_json(self) -> dict[str, Any]:
        return {"projectId": self.project_id, "projectData": {
            "name": "shared", "ownerAccountId": self.ids[Caller.OWNER], "description": "matrix",
            "defaultEnvironmentId": "default", "projectType": "NonDefault"}}

    def grant_json(self, grant_id: str, grantee: str, policy_id: str) -> dict[str, Any]:
        return {"id": grant_id, "data": {"granteeAccountId": grantee,
                                         "grantorProjectId": self.project_id,
                                         "projectPolicyId": policy_id}}

    def grants_json(self) -> list[dict[str, Any]]:
        return [
            self.grant_json(self.grant_with_id, self.ids[Caller.GRANTEE_WITH],
                            self.policy_with_id),
            self.grant_json(self.grant_without_id, self.ids[Caller.GRANTEE_WITHOUT],
                            self.policy_without_id),
            self.grant_json(self.bystander_grant_id, self.bystander_id, self.policy_with_id),
        ]


def build_world(stack: RunningStack, client: httpx.Client, action: ProjectAction | None,
                wasm: bytes = b"") -> World:
    """`wasm`: also create a component from it in the shared project (for component rows)."""
    root = {"Authorization": f"Bearer {stack.root_token}"}

    def post(path: str, body: Any, headers: dict[str, str] = root) -> Any:
        reply = client.post(path, json=body, headers=headers)
        assert reply.status_code == 200, (path, reply.text)
        return reply.json()

    secrets: dict[Caller, str] = {Caller.ADMIN: stack.root_token}
    ids: dict[Caller, str] = {Caller.ADMIN: "root"}
    tokens: dict[Caller, dict[str, Any]] = {}
    for caller in (Caller.OWNER, Caller.OTHER, Caller.GRANTEE_WITH, Caller.GRANTEE_WITHOUT):
        tag = caller.name.lower().replace("_", "-")
        account = post("/v1/accounts", {"name": f"matrix-{tag}", "email": f"{tag}@example.com"})
        issued = post(f"/v1/accounts/{account['id']}/tokens", {})
        ids[caller], secrets[caller] = account["id"], issued["secret"]["value"]
        tokens[caller] = issued["data"]
    owner_id = ids[Caller.OWNER]
    bystander = post("/v1/accounts", {"name": "matrix-bystander", "email": "by@example.com"})
    expired = post(f"/v1/accounts/{owner_id}/tokens", {"expiresAt": "2001-01-01T00:00:00Z"})
    secrets[Caller.EXPIRED] = expired["secret"]["value"]
    extra = post(f"/v1/accounts/{owner_id}/tokens", {"expiresAt": "2099-01-01T00:00:00Z"})
    owner = {"Authorization": f"Bearer {secrets[Caller.OWNER]}"}
    client.put(f"/v1/accounts/{owner_id}/grants/CreateProject", headers=root)
    project = post("/v1/projects", {"name": "shared", "ownerAccountId": owner_id,
                                    "description": "matrix"}, owner)
    pid = project["projectId"]
    # With the action: exactly it (or, for plain views, one unrelated action). Without: every
    # other action (or none at all, for plain views).
    with_actions = (action,) if action else (ProjectAction.VIEW_WORKER,)
    without = tuple(a for a in ALL_ACTIONS if a is not action) if action else ()
    policy_with = post("/v1/project-policies", {
        "name": "with", "projectActions": {"actions": [a.value for a in with_actions]}}, owner)
    policy_without = post("/v1/project-policies", {
        "name": "without", "projectActions": {"actions": [a.value for a in without]}}, owner)
    grant_with = post(f"/v1/projects/{pid}/grants", {
        "granteeAccountId": ids[Caller.GRANTEE_WITH], "projectPolicyId": policy_with["id"],
        "projectActions": []}, owner)
    grant_without = post(f"/v1/projects/{pid}/grants", {
        "granteeAccountId": ids[Caller.GRANTEE_WITHOUT], "projectPolicyId": policy_without["id"],
        "projectActions": []}, owner)
    bystander_grant = post(f"/v1/projects/{pid}/grants", {
        "granteeAccountId": bystander["id"], "projectPolicyId": policy_with["id"],
        "projectActions": []}, owner)
    world = World(
        client, stack.root_token, secrets, ids, pid, grant_with["id"], grant_without["id"],
        policy_with["id"], policy_without["id"], bystander["id"], bystander_grant["id"],
        extra["data"], expired["data"], tokens[Caller.OWNER], with_actions, without,
    )
    if wasm:
        made = client.post("/v1/components", headers=owner, **component_form("shared-c", pid, wasm))
        assert made.status_code == 200, made.text
        world.component, world.wasm = made.json(), wasm
        # The plugin the "install plugin" row installs, registered by the project's owner.
        post("/v1/plugins", {
            "name": "p", "version": "1", "description": "", "icon": [], "homepage": "",
            "specs": {"type": "ComponentTransformer", "validateUrl": "v", "transformUrl": "t"},
            "scope": {"type": "Global"}}, owner)
    return world


def component_form(name: str, project_id: str, wasm: bytes) -> dict[str, Any]:
    """httpx arguments of a Component API multipart create."""
    return {
        "data": {"query": json.dumps({"projectId": project_id, "componentName": name})},
        "files": {"component": ("c.wasm", wasm, "application/octet-stream")},
    }


Check = Callable[[World, Caller, httpx.Response], None]


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: Callable[[World], str]
    rule: Rule
    ok: Check
    action: ProjectAction | None = None
    body: Callable[[World, Caller], Any] | None = None
    content: bytes | None = None
    params: dict[str, str] | None = None
    # Changes the world: every cell gets a fresh one.
    destructive: bool = False
    # The world needs a component in the shared project.
    needs_component: bool = False
    # Extra httpx arguments (e.g. multipart `data`/`files`), made per world.
    request: Callable[[World], dict[str, Any]] | None = None
    # Rule.OWNER: what only the owner may do, as the denial words it.
    owner_only: str = ""
    # Query parameters that depend on the world.
    params_of: Callable[[World], dict[str, str]] | None = None


def body_is(expected: Callable[[World, Caller], Any]) -> Check:
    def check(world: World, caller: Caller, reply: httpx.Response) -> None:
        assert reply.status_code == 200, reply.text
        assert reply.text == exact(expected(world, caller))

    return check


def empty_object(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert (reply.status_code, reply.text) == (200, "{}")


def owner_account(world: World) -> str:
    return world.ids[Caller.OWNER]


def account_json(world: World, name: str = "matrix-owner", email: str = "owner@example.com"
                 ) -> dict[str, Any]:
    return {"id": owner_account(world), "name": name, "email": email, "planId": PLAN_ID}


def check_project_list(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    listed = reply.json()
    assert reply.text == exact(listed)
    assert listed[0] == world.default_project(caller)
    shared = [p for p in listed if p["projectId"] == world.project_id]
    assert shared == ([world.project_json()] if world.sees_shared_project(caller) else [])
    owners = {p["projectData"]["ownerAccountId"] for p in listed}
    assert owners <= {world.ids[caller], owner_account(world)}
    if caller is Caller.ADMIN:
        assert owners == {"root"}


def check_named_list(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    assert reply.text == exact([world.project_json()] if world.sees_shared_project(caller) else [])


def check_created_project(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    made = reply.json()
    assert made["projectData"] == {
        "name": "mine", "ownerAccountId": world.ids[caller], "description": "own",
        "defaultEnvironmentId": "default", "projectType": "NonDefault"}


def check_created_for_owner(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    assert reply.json()["projectData"]["ownerAccountId"] == owner_account(world)


def check_actions(world: World, caller: Caller, reply: httpx.Response) -> None:
    expected = world.grant_actions if caller is Caller.GRANTEE_WITH else ALL_ACTIONS
    assert (reply.status_code, reply.text) == (200, exact([a.value for a in expected]))


def check_new_grant(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    grant = reply.json()
    assert grant["data"]["granteeAccountId"] == world.bystander_id
    assert grant["data"]["grantorProjectId"] == world.project_id


def check_new_policy(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    policy = reply.json()
    assert policy == {"id": policy["id"], "name": "p",
                      "projectActions": {"actions": ["ViewComponent"]}}


def check_new_account(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    made = reply.json()
    assert made == {"id": made["id"], "name": "new", "email": "new@example.com",
                    "planId": PLAN_ID}


def check_new_token(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    made = reply.json()
    assert made["data"]["accountId"] == owner_account(world)
    assert made["data"]["expiresAt"] == "2098-01-01T00:00:00Z"
    uuid.UUID(made["secret"]["value"])


def check_owner_tokens(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    listed = reply.json()
    expected = sorted([world.first_owner_token, world.expired_token, world.extra_token],
                      key=lambda t: (t["createdAt"], t["id"]))
    assert reply.text == exact(expected)
    assert {t["accountId"] for t in listed} == {owner_account(world)}


def check_current_token(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    token = reply.json()
    assert token["accountId"] == world.ids[caller]
    assert set(token) == {"id", "accountId", "createdAt", "expiresAt"}


def check_self_default(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    project = reply.json()
    account = world.ids[caller]
    assert project["projectData"] == {
        "name": "default-project", "ownerAccountId": account,
        "description": f"Default project of the account {account}",
        "defaultEnvironmentId": "default", "projectType": "Default"}


def check_owner_roles(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert (reply.status_code, reply.text) == (200, '["CreateProject"]')


def check_role(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert (reply.status_code, reply.text) == (200, '"CreateProject"')


def check_granted_role(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert (reply.status_code, reply.text) == (200, '"MarketingAdmin"')


def check_plan(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200
    assert reply.json()["planId"] == PLAN_ID and reply.json()["planData"]["projectLimit"] == 100


def check_component_list(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert (reply.status_code, reply.text) == (200, exact([world.component]))


def check_component_versions(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert (reply.status_code, reply.text) == (200, exact([world.component]))


def check_component(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert (reply.status_code, reply.text) == (200, exact(world.component))


def check_download(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200
    assert reply.content == world.wasm


def check_new_component(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    made = reply.json()
    assert (made["componentName"], made["projectId"]) == ("new-c", world.project_id)
    assert made["versionedComponentId"]["version"] == 0


def check_new_version(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    made = reply.json()
    assert made["versionedComponentId"] == {"componentId": world.component_id, "version": 1}
    assert made["projectId"] == world.project_id


def check_count(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    assert isinstance(reply.json(), int) and reply.json() >= 6


def check_no_plugins(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert (reply.status_code, reply.text) == (200, "[]")


def check_new_installation(world: World, caller: Caller, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    made = reply.json()
    assert made == {"id": made["id"], "name": "p", "version": "1", "priority": 1,
                    "parameters": {}}


P = ProjectAction
ROWS: tuple[Row, ...] = (
    # --- Project API
    Row("default project", "GET", lambda w: "/v1/projects/default", Rule.SELF,
        check_self_default),
    Row("list projects", "GET", lambda w: "/v1/projects", Rule.SELF, check_project_list),
    Row("list projects by name", "GET", lambda w: "/v1/projects", Rule.SELF, check_named_list,
        params={"project-name": "shared"}),
    Row("create own project", "POST", lambda w: "/v1/projects", Rule.SELF,
        check_created_project, destructive=True,
        body=lambda w, c: {"name": "mine", "ownerAccountId": w.ids.get(c, "nobody"),
                           "description": "own"}),
    Row("create project for the owner", "POST", lambda w: "/v1/projects", Rule.ACCOUNT,
        check_created_for_owner, destructive=True,
        body=lambda w, c: {"name": "theirs", "ownerAccountId": owner_account(w),
                           "description": "d"}),
    Row("get project", "GET", lambda w: f"/v1/projects/{w.project_id}", Rule.PROJECT,
        body_is(lambda w, c: w.project_json())),
    Row("project actions", "GET", lambda w: f"/v1/projects/{w.project_id}/actions",
        Rule.PROJECT, check_actions),
    Row("delete project", "DELETE", lambda w: f"/v1/projects/{w.project_id}", Rule.OWNER,
        empty_object, destructive=True, owner_only="delete it"),
    # --- Project grant API
    Row("list grants", "GET", lambda w: f"/v1/projects/{w.project_id}/grants", Rule.PROJECT,
        body_is(lambda w, c: w.grants_json()), action=P.VIEW_PROJECT_GRANTS),
    Row("create grant", "POST", lambda w: f"/v1/projects/{w.project_id}/grants", Rule.PROJECT,
        check_new_grant, action=P.CREATE_PROJECT_GRANTS, destructive=True,
        body=lambda w, c: {"granteeAccountId": w.bystander_id,
                           "projectActions": ["CreateProjectGrants"]}),
    Row("get grant", "GET",
        lambda w: f"/v1/projects/{w.project_id}/grants/{w.bystander_grant_id}", Rule.PROJECT,
        body_is(lambda w, c: w.grants_json()[2]), action=P.VIEW_PROJECT_GRANTS),
    Row("delete grant", "DELETE",
        lambda w: f"/v1/projects/{w.project_id}/grants/{w.bystander_grant_id}", Rule.PROJECT,
        empty_object, action=P.DELETE_PROJECT_GRANTS, destructive=True),
    # --- Project policy API
    Row("create policy", "POST", lambda w: "/v1/project-policies", Rule.SELF, check_new_policy,
        destructive=True, body=lambda w, c: {"name": "p", "projectActions": ["ViewComponent"]}),
    Row("get policy", "GET", lambda w: f"/v1/project-policies/{w.policy_with_id}", Rule.POLICY,
        body_is(lambda w, c: {"id": w.policy_with_id, "name": "with",
                              "projectActions": {"actions": ["ViewWorker"]}})),
    # --- Account API
    Row("create account", "POST", lambda w: "/v1/accounts", Rule.ADMIN, check_new_account,
        destructive=True, body=lambda w, c: {"name": "new", "email": "new@example.com"}),
    Row("get account", "GET", lambda w: f"/v1/accounts/{owner_account(w)}", Rule.ACCOUNT,
        body_is(lambda w, c: account_json(w))),
    Row("update account", "PUT", lambda w: f"/v1/accounts/{owner_account(w)}", Rule.ACCOUNT,
        body_is(lambda w, c: account_json(w, "renamed", "renamed@example.com")),
        destructive=True, body=lambda w, c: {"name": "renamed", "email": "renamed@example.com"}),
    Row("delete account", "DELETE", lambda w: f"/v1/accounts/{owner_account(w)}", Rule.ACCOUNT,
        empty_object, destructive=True),
    Row("account plan", "GET", lambda w: f"/v1/accounts/{owner_account(w)}/plan", Rule.ACCOUNT,
        check_plan),
    Row("account roles", "GET", lambda w: f"/v1/accounts/{owner_account(w)}/grants",
        Rule.ACCOUNT, check_owner_roles),
    Row("account role", "GET",
        lambda w: f"/v1/accounts/{owner_account(w)}/grants/CreateProject", Rule.ACCOUNT,
        check_role),
    Row("grant role", "PUT",
        lambda w: f"/v1/accounts/{owner_account(w)}/grants/MarketingAdmin", Rule.ADMIN,
        check_granted_role, destructive=True),
    Row("revoke role", "DELETE",
        lambda w: f"/v1/accounts/{owner_account(w)}/grants/CreateProject", Rule.ADMIN,
        empty_object, destructive=True),
    Row("count accounts", "GET", lambda w: "/v1/admin/accounts/count", Rule.SUMMARIES,
        check_count),
    Row("resource limits", "GET", lambda w: "/v1/resource-limits", Rule.ACCOUNT,
        body_is(lambda w, c: {"availableFuel": 10**12, "maxMemoryPerWorker": 100 << 20}),
        params_of=lambda w: {"account-id": owner_account(w)}),
    # --- Token API
    Row("list tokens", "GET", lambda w: f"/v1/accounts/{owner_account(w)}/tokens",
        Rule.ACCOUNT, check_owner_tokens),
    Row("create token", "POST", lambda w: f"/v1/accounts/{owner_account(w)}/tokens",
        Rule.ACCOUNT, check_new_token, destructive=True,
        body=lambda w, c: {"expiresAt": "2098-01-01T00:00:00Z"}),
    Row("get token", "GET",
        lambda w: f"/v1/accounts/{owner_account(w)}/tokens/{w.extra_token['id']}",
        Rule.ACCOUNT, body_is(lambda w, c: w.extra_token)),
    Row("delete token", "DELETE",
        lambda w: f"/v1/accounts/{owner_account(w)}/tokens/{w.extra_token['id']}",
        Rule.ACCOUNT, empty_object, destructive=True),
    # --- Login API
    Row("current token", "GET", lambda w: "/v1/login/token", Rule.SELF, check_current_token),
    Row("oauth2 exchange", "POST", lambda w: "/v1/oauth2", Rule.PUBLIC, empty_object,
        params={"provider": "github", "access-token": "gho_x"}),
    Row("device start", "POST", lambda w: "/login/oauth2/device/start", Rule.PUBLIC,
        empty_object),
    Row("device complete", "POST", lambda w: "/login/oauth2/device/complete", Rule.PUBLIC,
        empty_object, content=b'"session"'),
    Row("web authorize", "GET", lambda w: "/v1/login/oauth2/web/authorize", Rule.PUBLIC,
        empty_object, params={"provider": "github"}),
    Row("web callback", "GET", lambda w: "/v1/login/oauth2/web/callback/github", Rule.PUBLIC,
        empty_object, params={"code": "c", "state": "s"}),
    Row("web poll", "GET", lambda w: "/v1/login/oauth2/web/poll", Rule.PUBLIC, empty_object,
        params={"state": "s"}),
    # --- Component API (the component service asks the project service's ProjectAccess)
    Row("list components", "GET", lambda w: "/v1/components", Rule.PROJECT,
        check_component_list, action=P.VIEW_COMPONENT, needs_component=True,
        request=lambda w: {"params": {"project-id": w.project_id}}),
    Row("create component", "POST", lambda w: "/v1/components", Rule.PROJECT,
        check_new_component, action=P.CREATE_COMPONENT, needs_component=True, destructive=True,
        request=lambda w: component_form("new-c", w.project_id, w.wasm)),
    Row("component versions", "GET", lambda w: f"/v1/components/{w.component_id}",
        Rule.PROJECT, check_component_versions, action=P.VIEW_COMPONENT, needs_component=True),
    Row("latest component", "GET", lambda w: f"/v1/components/{w.component_id}/latest",
        Rule.PROJECT, check_component, action=P.VIEW_COMPONENT, needs_component=True),
    Row("component version", "GET", lambda w: f"/v1/components/{w.component_id}/versions/0",
        Rule.PROJECT, check_component, action=P.VIEW_COMPONENT, needs_component=True),
    Row("download component", "GET", lambda w: f"/v1/components/{w.component_id}/download",
        Rule.PROJECT, check_download, action=P.VIEW_COMPONENT, needs_component=True),
    Row("upload component", "PUT", lambda w: f"/v1/components/{w.component_id}/upload",
        Rule.PROJECT, check_new_version, action=P.UPDATE_COMPONENT, needs_component=True,
        destructive=True,
        request=lambda w: {"content": w.wasm,
                           "headers": {"Content-Type": "application/octet-stream"}}),
    Row("update component", "POST", lambda w: f"/v1/components/{w.component_id}/updates",
        Rule.PROJECT, check_new_version, action=P.UPDATE_COMPONENT, needs_component=True,
        destructive=True,
        request=lambda w: {"files": {"component": ("c.wasm", w.wasm,
                                                   "application/octet-stream")}}),
    Row("list plugin installations", "GET",
        lambda w: f"/v1/components/{w.component_id}/versions/0/plugins/installs", Rule.PROJECT,
        check_no_plugins, action=P.VIEW_COMPONENT, needs_component=True),
    Row("list project plugin installations", "GET",
        lambda w: f"/v1/projects/{w.project_id}/plugins/installs", Rule.PROJECT, check_no_plugins),
    Row("install plugin on the project", "POST",
        lambda w: f"/v1/projects/{w.project_id}/plugins/installs", Rule.OWNER,
        check_new_installation, needs_component=True, destructive=True,
        owner_only="change its plugin installations",
        body=lambda w, c: {"name": "p", "version": "1", "priority": 1, "parameters": {}}),
    Row("install plugin", "POST",
        lambda w: f"/v1/components/{w.component_id}/latest/plugins/installs", Rule.PROJECT,
        check_new_installation, action=P.UPDATE_COMPONENT, needs_component=True,
        destructive=True,
        body=lambda w, c: {"name": "p", "version": "1", "priority": 1, "parameters": {}}),
)


def expected_denial(row: Row, world: World, caller: Caller) -> tuple[int, str] | None:
    """(status, exact body) for a refused cell; None where the call must succeed."""
    if row.rule is Rule.PUBLIC:
        return 409, exact({"error": "Logins are disabled by configuration"})
    if caller is Caller.NO_TOKEN:
        return 401, exact({"error": "Unauthorized"})
    if caller is Caller.EXPIRED:
        return 401, exact({"error": "Invalid Token: Expired auth token."})
    if caller is Caller.ADMIN or row.rule is Rule.SELF:
        return None
    pid, owner = world.project_id, owner_account(world)
    if row.rule is Rule.ADMIN:
        return 401, exact({"error": "Action is only allowed for [Admin]"})
    if row.rule is Rule.SUMMARIES:
        return 401, exact({"error": "Action is only allowed for [Admin, MarketingAdmin]"})
    if caller is Caller.OWNER:
        return None
    if row.rule is Rule.ACCOUNT:
        return 401, exact({"error": f"Access to account `{owner}` is not allowed"})
    if row.rule is Rule.POLICY:
        if caller is Caller.GRANTEE_WITH:
            return None
        return 404, exact({"error": f"Project policy not found: {world.policy_with_id}"})
    if row.rule is Rule.OWNER:
        if world.sees_shared_project(caller):
            message = f"Only the owner of project `{pid}` or an admin may {row.owner_only}"
            return 401, exact({"error": message})
        return 401, exact({"error": f"Access to project `{pid}` is not allowed"})
    assert row.rule is Rule.PROJECT
    if caller is Caller.GRANTEE_WITH:
        return None
    if row.action is None:
        return 401, exact({"error": f"Access to project `{pid}` is not allowed"})
    return 401, exact({"error": f"Action `{row.action.value}` is not allowed on project `{pid}`"})


@pytest.fixture(scope="module")
def client(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def worlds() -> dict[str, World]:
    """One world per row, shared by the row's cells except successful destructive ones."""
    return {}


@pytest.fixture(scope="module")
def wasm(shared_fixtures: Path) -> bytes:
    """A small real component (Golem's rust-echo test component)."""
    return (shared_fixtures / "golem" / "wasm" / "rust-echo.wasm").read_bytes()


@pytest.mark.parametrize("caller", CALLERS, ids=[c.value for c in CALLERS])
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_cell(
    row: Row, caller: Caller, stack: RunningStack, client: httpx.Client,
    worlds: dict[str, World], wasm: bytes,
) -> None:
    component = wasm if row.needs_component else b""
    if row.name not in worlds:
        worlds[row.name] = build_world(stack, client, row.action, component)
    world = worlds[row.name]
    denial = expected_denial(row, world, caller)
    # A refused call changes nothing (were it to, the row's next cells would notice), so only
    # a call that must succeed and change things gets a world of its own.
    if denial is None and row.destructive:
        world = build_world(stack, client, row.action, component)
        denial = expected_denial(row, world, caller)
    kwargs: dict[str, Any] = {}
    if row.params:
        kwargs["params"] = row.params
    if row.params_of is not None:
        kwargs["params"] = row.params_of(world)
    if row.body is not None:
        kwargs["json"] = row.body(world, caller)
    if row.content is not None:
        kwargs["content"] = row.content
        kwargs["headers"] = {"Content-Type": "application/json"}
    if row.request is not None:
        kwargs.update(row.request(world))
    reply = world.call(caller, row.method, row.path(world), **kwargs)
    if denial is None:
        row.ok(world, caller, reply)
        return
    # Envoy's own replies (ext_authz denials) end with a newline; the services' do not.
    assert (reply.status_code, reply.text.removesuffix("\n")) == denial
    assert reply.headers["content-type"].startswith("application/json")
    json.loads(reply.text)
