"""Project policies and grants end to end through Envoy: lifecycles, visibility, enforcement."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest

from cairn.project.v1 import project_grant_service_pb2 as grant_pb
from cairn.project.v1 import project_grant_service_pb2_grpc as grant_grpc
from cairn.project.v1 import project_service_pb2 as pb
from cairn.project.v1 import project_service_pb2_grpc as pb_grpc

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e


@pytest.fixture
def root(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.root_token}"}
    ) as client:
        yield client


def account(stack: RunningStack, root: httpx.Client, name: str) -> tuple[str, httpx.Client]:
    made = root.post("/v1/accounts", json={"name": name, "email": f"{name}@example.com"})
    account_id = made.json()["id"]
    secret = root.post(f"/v1/accounts/{account_id}/tokens", json={}).json()["secret"]["value"]
    client = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {secret}"})
    return account_id, client


def project(client: httpx.Client, owner: str, name: str) -> str:
    made = client.post("/v1/projects",
                       json={"name": name, "ownerAccountId": owner, "description": "d"})
    assert made.status_code == 200, made.text
    return str(made.json()["projectId"])


def test_policy_create_and_get_accept_both_action_shapes(
    stack: RunningStack, root: httpx.Client
) -> None:
    _, owner = account(stack, root, "pol-owner")
    _, stranger = account(stack, root, "pol-stranger")
    with owner, stranger:
        made = owner.post("/v1/project-policies", json={
            "name": "viewers", "projectActions": {"actions": ["ViewWorker", "ViewComponent"]},
        })
        assert made.status_code == 200, made.text
        policy_id = made.json()["id"]
        uuid.UUID(policy_id)
        # Listed in Golem's enum order, in the 2024+ object form.
        expected = exact({"id": policy_id, "name": "viewers",
                          "projectActions": {"actions": ["ViewComponent", "ViewWorker"]}})
        assert made.text == expected
        assert owner.get(f"/v1/project-policies/{policy_id}").text == expected
        assert root.get(f"/v1/project-policies/{policy_id}").text == expected
        # The 2023 docs: a bare array with the old *Instance names.
        legacy = owner.post("/v1/project-policies", json={
            "name": "old", "projectActions": ["ViewComponent", "ViewInstance", "CreateTemplate"],
        })
        assert legacy.json()["projectActions"] == {
            "actions": ["ViewComponent", "CreateComponent", "ViewWorker"]
        }
        hidden = stranger.get(f"/v1/project-policies/{policy_id}")
        assert (hidden.status_code, hidden.text) == (
            404, exact({"error": f"Project policy not found: {policy_id}"})
        )
        bad = owner.post("/v1/project-policies", json={"name": "x", "projectActions": ["Fly"]})
        assert (bad.status_code, bad.text) == (
            400, exact({"errors": ["Invalid project action: 'Fly'"]})
        )
        missing = owner.post("/v1/project-policies", json={"projectActions": []})
        assert missing.json() == {"errors": ["Missing field: name"]}
        not_json = owner.post("/v1/project-policies", content=b"{oops",
                              headers={"Content-Type": "application/json"})
        assert not_json.status_code == 400
        assert not_json.json()["errors"][0].startswith("Invalid JSON body")
        bad_id = owner.get("/v1/project-policies/not-a-uuid")
        assert bad_id.json() == {
            "errors": ["Invalid project policy id: 'not-a-uuid' is not a UUID"]
        }


def test_grant_lifecycle_gives_and_takes_access(stack: RunningStack, root: httpx.Client) -> None:
    owner_id, owner = account(stack, root, "g-owner")
    grantee_id, grantee = account(stack, root, "g-grantee")
    with owner, grantee:
        pid = project(owner, owner_id, "shared")
        before = grantee.get(f"/v1/projects/{pid}")
        assert (before.status_code, before.text) == (
            401, exact({"error": f"Access to project `{pid}` is not allowed"})
        )
        # Without a policy id, a policy is made from projectActions (name defaults to "").
        made = owner.post(f"/v1/projects/{pid}/grants", json={
            "granteeAccountId": grantee_id,
            "projectActions": ["ViewComponent", "ViewProjectGrants"],
        })
        assert made.status_code == 200, made.text
        grant = made.json()
        grant_id, policy_id = grant["id"], grant["data"]["projectPolicyId"]
        assert made.text == exact({"id": grant_id, "data": {
            "granteeAccountId": grantee_id, "grantorProjectId": pid, "projectPolicyId": policy_id,
        }})
        # The grantee sees the policy of its grant, the project, and its actions.
        assert grantee.get(f"/v1/project-policies/{policy_id}").json() == {
            "id": policy_id, "name": "",
            "projectActions": {"actions": ["ViewComponent", "ViewProjectGrants"]},
        }
        assert grantee.get(f"/v1/projects/{pid}").status_code == 200
        assert grantee.get(f"/v1/projects/{pid}/actions").text == exact(
            ["ViewComponent", "ViewProjectGrants"]
        )
        listed = grantee.get("/v1/projects").json()
        assert [p["projectData"]["name"] for p in listed] == ["default-project", "shared"]
        assert grantee.get("/v1/projects", params={"project-name": "shared"}).json()[0][
            "projectId"] == pid
        assert grantee.get(f"/v1/projects/{pid}/grants").text == exact([grant])
        assert grantee.get(f"/v1/projects/{pid}/grants/{grant_id}").text == exact(grant)
        # ... and nothing more.
        denied = grantee.delete(f"/v1/projects/{pid}")
        assert (denied.status_code, denied.text) == (
            401,
            exact({"error": f"Only the owner of project `{pid}` or an admin may delete it"}),
        )
        denied = grantee.delete(f"/v1/projects/{pid}/grants/{grant_id}")
        assert denied.json() == {
            "error": f"Action `DeleteProjectGrants` is not allowed on project `{pid}`"
        }
        # Revoking the grant takes everything back.
        deleted = owner.delete(f"/v1/projects/{pid}/grants/{grant_id}")
        assert (deleted.status_code, deleted.text) == (200, "{}")
        assert owner.get(f"/v1/projects/{pid}/grants").text == "[]"
        assert grantee.get(f"/v1/projects/{pid}").status_code == 401
        assert [p["projectData"]["name"] for p in grantee.get("/v1/projects").json()] == [
            "default-project"
        ]
        gone = owner.get(f"/v1/projects/{pid}/grants/{grant_id}")
        assert (gone.status_code, gone.text) == (
            404, exact({"error": f"Project grant not found: {grant_id}"})
        )


def test_grant_with_an_existing_policy_and_its_rules(
    stack: RunningStack, root: httpx.Client
) -> None:
    owner_id, owner = account(stack, root, "p-owner")
    grantee_id, grantee = account(stack, root, "p-grantee")
    third_id, third = account(stack, root, "p-third")
    with owner, grantee, third:
        pid = project(owner, owner_id, "with-policy")
        policy = owner.post("/v1/project-policies", json={
            "name": "granters", "projectActions": {"actions": [
                "ViewComponent", "CreateProjectGrants", "ViewProjectGrants",
            ]},
        }).json()
        made = owner.post(f"/v1/projects/{pid}/grants", json={
            "granteeAccountId": grantee_id, "projectPolicyId": policy["id"],
            "projectActions": [],
        })
        assert made.json()["data"]["projectPolicyId"] == policy["id"]
        # A grantee that may grant passes on only what it holds itself.
        escalate = grantee.post(f"/v1/projects/{pid}/grants", json={
            "granteeAccountId": third_id, "projectActions": ["DeleteComponent"],
        })
        assert (escalate.status_code, escalate.json()) == (
            401, {"error": f"Action `DeleteComponent` is not allowed on project `{pid}`"}
        )
        passed_on = grantee.post(f"/v1/projects/{pid}/grants", json={
            "granteeAccountId": third_id, "projectActions": {"actions": ["ViewComponent"]},
        })
        assert passed_on.status_code == 200, passed_on.text
        assert third.get(f"/v1/projects/{pid}/actions").json() == ["ViewComponent"]
        # Someone else's policy id is as good as an unknown one.
        private = third.post("/v1/project-policies", json={
            "name": "mine", "projectActions": ["ViewComponent"]}).json()
        foreign = owner.post(f"/v1/projects/{pid}/grants", json={
            "granteeAccountId": grantee_id, "projectPolicyId": private["id"],
            "projectActions": [],
        })
        assert (foreign.status_code, foreign.json()) == (
            404, {"error": f"Project policy not found: {private['id']}"}
        )
        unknown = owner.post(f"/v1/projects/{pid}/grants", json={
            "granteeAccountId": "no-such-account", "projectActions": ["ViewComponent"],
        })
        assert (unknown.status_code, unknown.json()) == (
            404, {"error": "Account not found: no-such-account"}
        )
        missing = owner.post(f"/v1/projects/{pid}/grants", json={})
        assert missing.json() == {
            "errors": ["Missing field: granteeAccountId", "Missing field: projectActions"]
        }
        # Deleting the project deletes its grants: grantees lose it from their lists.
        assert owner.delete(f"/v1/projects/{pid}").status_code == 200
        for client in (grantee, third):
            names = [p["projectData"]["name"] for p in client.get("/v1/projects").json()]
            assert names == ["default-project"]


def test_grants_apply_to_native_grpc_and_authorize_project_action(
    stack: RunningStack, root: httpx.Client
) -> None:
    owner_id, owner = account(stack, root, "n-owner")
    grantee_id, grantee = account(stack, root, "n-grantee")
    with owner, grantee:
        pid = project(owner, owner_id, "native")
        secret = str(grantee.headers["Authorization"]).removeprefix("Bearer ")
        owner_secret = str(owner.headers["Authorization"]).removeprefix("Bearer ")
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_ports['project']}") as channel:
        grants = grant_grpc.ProjectGrantServiceStub(channel)
        made = grants.CreateProjectGrant(
            grant_pb.CreateProjectGrantRequest(
                project_id=pid, grantee_account_id=grantee_id,
                project_actions=[pb.PROJECT_ACTION_VIEW_COMPONENT,
                                 pb.PROJECT_ACTION_CREATE_COMPONENT],
            ),
            metadata=(("authorization", f"Bearer {owner_secret}"),),
        )
        assert made.grant.grantee_account_id == grantee_id and not made.rest.data
        projects = pb_grpc.ProjectServiceStub(channel)
        as_grantee = (("authorization", f"Bearer {secret}"),)
        reply = projects.AuthorizeProjectAction(
            pb.AuthorizeProjectActionRequest(project_id=pid,
                                             action=pb.PROJECT_ACTION_CREATE_COMPONENT),
            metadata=as_grantee,
        )
        assert reply.project_owner_account_id == owner_id
        with pytest.raises(grpc.RpcError) as err:
            projects.AuthorizeProjectAction(
                pb.AuthorizeProjectActionRequest(project_id=pid,
                                                 action=pb.PROJECT_ACTION_UPDATE_COMPONENT),
                metadata=as_grantee,
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == (
            f"Action `UpdateComponent` is not allowed on project `{pid}`"
        )
