"""Project policies and grants over real gRPC sockets: typed native calls, REST bodies, access.

The project service runs with its real AccountDirectory, which asks a real auth service (with
internal RPCs) for accounts and plans, both against a real Redis.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import redis.asyncio as aioredis
from google.api import httpbody_pb2

from cairn.auth.callers import LocalCallers
from cairn.auth.grpc_api import AuthApi, InternalServices
from cairn.auth.service import AccountService, Authenticator, UsageService
from cairn.auth.settings import Plan
from cairn.auth.store import FAR_FUTURE, Account, AuthStore
from cairn.auth.v1 import auth_service_pb2_grpc
from cairn.project.accounts import AuthAccountDirectory
from cairn.project.grpc_api import ProjectApi, ProjectGrantApi, ProjectPolicyApi
from cairn.project.service import ProjectService
from cairn.project.store import ProjectStore
from cairn.project.v1 import project_grant_service_pb2 as grant_pb
from cairn.project.v1 import project_grant_service_pb2_grpc as grant_grpc
from cairn.project.v1 import project_service_pb2 as pb
from cairn.project.v1 import project_service_pb2_grpc as pb_grpc
from cairn.runtime.callers import CallerResolver
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.rest import REST_MARKER
from cairn.runtime.server import RunningServer, start_server

SECRET = "grants-internal-secret"
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Stack:
    auth: RunningServer
    project: RunningServer
    store: AuthStore
    channel: grpc.aio.Channel

    @property
    def projects(self) -> pb_grpc.ProjectServiceAsyncStub:
        return pb_grpc.ProjectServiceStub(self.channel)

    @property
    def grants(self) -> grant_grpc.ProjectGrantServiceAsyncStub:
        return grant_grpc.ProjectGrantServiceStub(self.channel)

    @property
    def policies(self) -> grant_grpc.ProjectPolicyServiceAsyncStub:
        return grant_grpc.ProjectPolicyServiceStub(self.channel)

    async def account(self, name: str) -> tuple[str, Metadata]:
        account_id = str(uuid.uuid4())
        await self.store.put_account(Account(account_id, name, f"{name}@example.com"))
        secret = str(uuid.uuid4())
        await self.store.add_token(account_id, secret, FAR_FUTURE)
        return account_id, (("authorization", f"Bearer {secret}"),)


@pytest.fixture
async def stack(redis: aioredis.Redis) -> AsyncIterator[Stack]:
    store = AuthStore(redis)
    await store.bootstrap_root("root", "root@example.com", str(uuid.uuid4()))
    authn = Authenticator(store)
    plan = Plan(project_limit=2)
    internal = InternalServices(AccountService(store, plan, "root"), UsageService(store, plan))

    def register_auth(server: grpc.aio.Server) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
            AuthApi(authn, LocalCallers(authn, SECRET), internal), server
        )

    auth = await start_server(register=register_auth, services=["cairn.auth.v1.AuthService"],
                              style=ErrorStyle.GOLEM)
    auth_address = f"127.0.0.1:{auth.port}"
    projects = ProjectService(ProjectStore(redis),
                              accounts=AuthAccountDirectory(auth_address, SECRET))
    callers = CallerResolver(SECRET, auth_address)

    def register_project(server: grpc.aio.Server) -> None:
        pb_grpc.add_ProjectServiceServicer_to_server(ProjectApi(projects, callers), server)
        grant_grpc.add_ProjectGrantServiceServicer_to_server(
            ProjectGrantApi(projects, callers), server)
        grant_grpc.add_ProjectPolicyServiceServicer_to_server(
            ProjectPolicyApi(projects, callers), server)

    project = await start_server(register=register_project,
                                 services=["cairn.project.v1.ProjectService"],
                                 style=ErrorStyle.GOLEM)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{project.port}")
    yield Stack(auth, project, store, channel)
    await channel.close(None)
    await project.stop(0)
    await auth.stop(0)


async def new_project(stack: Stack, owner: str, md: Metadata, name: str = "p") -> str:
    reply = await stack.projects.CreateProject(
        pb.CreateProjectRequest(name=name, owner_account_id=owner, description="d"), metadata=md)
    return reply.project.project_id


async def grant(stack: Stack, md: Metadata, project_id: str, grantee: str,
                *actions: int) -> grant_pb.ProjectGrant:
    reply = await stack.grants.CreateProjectGrant(grant_pb.CreateProjectGrantRequest(
        project_id=project_id, grantee_account_id=grantee,
        project_actions=list(actions)),  # type: ignore[arg-type]
        metadata=md)
    return reply.grant


async def test_several_grants_give_the_union_of_their_policies(stack: Stack) -> None:
    owner, owner_md = await stack.account("owner")
    grantee, grantee_md = await stack.account("grantee")
    pid = await new_project(stack, owner, owner_md)
    await grant(stack, owner_md, pid, grantee, pb.PROJECT_ACTION_VIEW_WORKER)
    second = await grant(stack, owner_md, pid, grantee, pb.PROJECT_ACTION_VIEW_COMPONENT,
                         pb.PROJECT_ACTION_VIEW_WORKER)
    actions = await stack.projects.GetProjectActions(
        pb.GetProjectActionsRequest(project_id=pid), metadata=grantee_md)
    assert list(actions.actions) == [pb.PROJECT_ACTION_VIEW_COMPONENT,
                                     pb.PROJECT_ACTION_VIEW_WORKER]
    await stack.grants.DeleteProjectGrant(
        grant_pb.ProjectGrantRequest(project_id=pid, grant_id=second.id), metadata=owner_md)
    actions = await stack.projects.GetProjectActions(
        pb.GetProjectActionsRequest(project_id=pid), metadata=grantee_md)
    assert list(actions.actions) == [pb.PROJECT_ACTION_VIEW_WORKER]


async def test_grantee_lists_own_projects_first_then_granted_ones_in_grant_order(
    stack: Stack,
) -> None:
    a, a_md = await stack.account("a")
    b, b_md = await stack.account("b")
    me, me_md = await stack.account("me")
    pa = await new_project(stack, a, a_md, "from-a")
    pb_ = await new_project(stack, b, b_md, "from-b")
    mine = await new_project(stack, me, me_md, "mine")
    await grant(stack, b_md, pb_, me, pb.PROJECT_ACTION_VIEW_COMPONENT)
    await grant(stack, a_md, pa, me, pb.PROJECT_ACTION_VIEW_COMPONENT)
    await grant(stack, a_md, pa, me, pb.PROJECT_ACTION_VIEW_WORKER)
    listed = await stack.projects.ListProjects(pb.ListProjectsRequest(), metadata=me_md)
    assert [p.name for p in listed.projects] == ["default-project", "mine", "from-b", "from-a"]
    assert listed.projects[1].project_id == mine
    # The others' lists are untouched by the grants they gave.
    theirs = await stack.projects.ListProjects(pb.ListProjectsRequest(), metadata=a_md)
    assert [p.name for p in theirs.projects] == ["default-project", "from-a"]


async def test_policies_over_native_grpc_and_as_rest_bodies(stack: Stack) -> None:
    _, owner_md = await stack.account("pol")
    typed = await stack.policies.CreateProjectPolicy(grant_pb.CreateProjectPolicyRequest(
        name="typed", actions=[pb.PROJECT_ACTION_DELETE_WORKER, pb.PROJECT_ACTION_VIEW_WORKER]),
        metadata=owner_md)
    assert typed.policy.name == "typed" and not typed.rest.data
    assert list(typed.policy.actions) == [pb.PROJECT_ACTION_VIEW_WORKER,
                                          pb.PROJECT_ACTION_DELETE_WORKER]
    body = httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(
        {"name": "rest", "projectActions": ["ViewInstance"]}).encode())
    as_rest = await stack.policies.CreateProjectPolicy(
        grant_pb.CreateProjectPolicyRequest(rest=body),
        metadata=(*owner_md, (REST_MARKER, "1")))
    made = json.loads(as_rest.rest.data)
    assert made == {"id": made["id"], "name": "rest",
                    "projectActions": {"actions": ["ViewWorker"]}}
    fetched = await stack.policies.GetProjectPolicy(
        grant_pb.GetProjectPolicyRequest(project_policy_id=made["id"]), metadata=owner_md)
    assert fetched.policy.id == made["id"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.policies.CreateProjectPolicy(
            grant_pb.CreateProjectPolicyRequest(actions=[99]),  # type: ignore[list-item]
            metadata=owner_md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "Invalid project action: 99"


async def test_project_limit_comes_from_the_owners_plan(stack: Stack) -> None:
    owner, owner_md = await stack.account("limited")
    await new_project(stack, owner, owner_md, "one")  # with the default project: two
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await new_project(stack, owner, owner_md, "two")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == "Limit Exceeded: Project limit exceeded (limit: 2)"
    listed = await stack.projects.ListProjects(pb.ListProjectsRequest(), metadata=owner_md)
    assert [p.name for p in listed.projects] == ["default-project", "one"]


async def test_grants_to_unknown_accounts_and_on_unknown_projects(stack: Stack) -> None:
    owner, owner_md = await stack.account("o")
    pid = await new_project(stack, owner, owner_md)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grant(stack, owner_md, pid, "ghost", pb.PROJECT_ACTION_VIEW_WORKER)
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.NOT_FOUND, "Account not found: ghost")
    missing = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.grants.ListProjectGrants(
            grant_pb.ListProjectGrantsRequest(project_id=missing), metadata=owner_md)
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.NOT_FOUND, f"Project not found: {missing}")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.grants.GetProjectGrant(
            grant_pb.ProjectGrantRequest(project_id=pid, grant_id="nope"), metadata=owner_md)
    assert err.value.details() == "Invalid project grant id: 'nope' is not a UUID"
