"""The project service over real gRPC sockets: typed replies, REST bodies, access, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, cast

import grpc
import pytest
import redis.asyncio as aioredis

from cairn.project.service import ProjectService
from cairn.project.store import ProjectStore
from cairn.project.v1 import project_service_pb2 as pb
from cairn.project.v1 import project_service_pb2_grpc as pb_grpc
from cairn.runtime.principal import PRINCIPAL_HEADER, Principal, sign
from cairn.runtime.rest import REST_MARKER

from .conftest import INTERNAL_SECRET, Services


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


def rest(secret: str) -> tuple[tuple[str, str], ...]:
    return (*bearer(secret), (REST_MARKER, "1"))


def trailers_of(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """The trailing metadata as a dict (grpc.aio yields (key, value) pairs; its stubs disagree)."""
    return dict(cast(Any, err.trailing_metadata() or ()))


async def stub(services: Services) -> pb_grpc.ProjectServiceAsyncStub:
    channel = grpc.aio.insecure_channel(services.project_address)
    return pb_grpc.ProjectServiceStub(channel)


async def test_default_project_is_created_once_even_under_concurrent_first_calls(
    services: Services,
) -> None:
    s = await stub(services)
    account, secret = await services.new_account("alice")
    replies = await asyncio.gather(
        *(s.GetDefaultProject(pb.GetDefaultProjectRequest(), metadata=bearer(secret))
          for _ in range(20))
    )
    assert len({r.project.project_id for r in replies}) == 1
    project = replies[0].project
    assert project.name == "default-project"
    assert project.owner_account_id == account
    assert project.description == f"Default project of the account {account}"
    assert project.project_type == pb.PROJECT_TYPE_DEFAULT
    assert project.default_environment_id == "default"
    listed = await s.ListProjects(pb.ListProjectsRequest(), metadata=bearer(secret))
    assert [p.project_id for p in listed.projects] == [project.project_id]


async def test_rest_callers_get_golem_json_and_grpc_callers_typed_fields(
    services: Services,
) -> None:
    s = await stub(services)
    account, secret = await services.new_account("bob")
    typed = await s.CreateProject(
        pb.CreateProjectRequest(name="p1", owner_account_id=account, description="d"),
        metadata=bearer(secret),
    )
    assert typed.project.name == "p1" and not typed.rest.data
    as_rest = await s.GetProject(
        pb.GetProjectRequest(project_id=typed.project.project_id), metadata=rest(secret)
    )
    assert not as_rest.HasField("project")
    assert as_rest.rest.content_type == "application/json; charset=utf-8"
    assert json.loads(as_rest.rest.data) == {
        "projectId": typed.project.project_id,
        "projectData": {
            "name": "p1",
            "ownerAccountId": account,
            "description": "d",
            "defaultEnvironmentId": "default",
            "projectType": "NonDefault",
        },
    }


async def test_list_filters_by_name_and_shows_only_own_projects(services: Services) -> None:
    s = await stub(services)
    alice, alice_secret = await services.new_account("alice")
    bob, bob_secret = await services.new_account("bob")
    for name in ("shared-name", "other"):
        await s.CreateProject(
            pb.CreateProjectRequest(name=name, owner_account_id=alice, description=""),
            metadata=bearer(alice_secret),
        )
    await s.CreateProject(
        pb.CreateProjectRequest(name="shared-name", owner_account_id=bob, description=""),
        metadata=bearer(bob_secret),
    )
    named = await s.ListProjects(
        pb.ListProjectsRequest(project_name="shared-name"), metadata=bearer(alice_secret)
    )
    assert [(p.name, p.owner_account_id) for p in named.projects] == [("shared-name", alice)]
    everything = await s.ListProjects(pb.ListProjectsRequest(), metadata=bearer(alice_secret))
    assert [p.name for p in everything.projects] == ["default-project", "shared-name", "other"]


async def test_other_accounts_projects_are_not_accessible(services: Services) -> None:
    s = await stub(services)
    alice, alice_secret = await services.new_account("alice")
    _, bob_secret = await services.new_account("bob")
    created = await s.CreateProject(
        pb.CreateProjectRequest(name="private", owner_account_id=alice, description=""),
        metadata=bearer(alice_secret),
    )
    project_id = created.project.project_id
    for call in (
        s.GetProject(pb.GetProjectRequest(project_id=project_id), metadata=rest(bob_secret)),
        s.DeleteProject(pb.DeleteProjectRequest(project_id=project_id), metadata=rest(bob_secret)),
        s.GetProjectActions(
            pb.GetProjectActionsRequest(project_id=project_id), metadata=rest(bob_secret)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        trailers = trailers_of(denied.value)
        assert trailers["x-http-status"] == "401"
    # Creating a project for somebody else is refused too.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await s.CreateProject(
            pb.CreateProjectRequest(name="x", owner_account_id=alice, description=""),
            metadata=bearer(bob_secret),
        )
    assert json.loads(trailers_of(denied.value)["x-http-body"]) == {
        "error": f"Access to account `{alice}` is not allowed"
    }


async def test_errors_carry_documented_rest_bodies(services: Services) -> None:
    s = await stub(services)
    _, secret = await services.new_account("carol")
    cases = [
        (s.CreateProject(pb.CreateProjectRequest(name="n"), metadata=rest(secret)),
         grpc.StatusCode.INVALID_ARGUMENT, "400",
         {"errors": ["Missing field: ownerAccountId", "Missing field: description"]}),
        (s.GetProject(pb.GetProjectRequest(project_id="nope"), metadata=rest(secret)),
         grpc.StatusCode.INVALID_ARGUMENT, "400",
         {"errors": ["Invalid project id: 'nope' is not a UUID"]}),
        (s.GetProject(pb.GetProjectRequest(project_id="00000000-0000-0000-0000-000000000001"),
                      metadata=rest(secret)),
         grpc.StatusCode.NOT_FOUND, "404",
         {"error": "Project not found: 00000000-0000-0000-0000-000000000001"}),
    ]
    for call, code, status, body in cases:
        assert isinstance(call, Awaitable)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        trailers = trailers_of(failed.value)
        assert (failed.value.code(), trailers["x-http-status"]) == (code, status)
        assert json.loads(trailers["x-http-body"]) == body


async def test_default_project_cannot_be_deleted_but_others_can(services: Services) -> None:
    s = await stub(services)
    account, secret = await services.new_account("dave")
    default = (await s.GetDefaultProject(pb.GetDefaultProjectRequest(), metadata=bearer(secret)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await s.DeleteProject(
            pb.DeleteProjectRequest(project_id=default.project.project_id), metadata=rest(secret)
        )
    assert json.loads(trailers_of(refused.value)["x-http-body"]) == {
        "errors": ["Cannot delete default project"]
    }
    other = await s.CreateProject(
        pb.CreateProjectRequest(name="tmp", owner_account_id=account, description=""),
        metadata=bearer(secret),
    )
    deleted = await s.DeleteProject(
        pb.DeleteProjectRequest(project_id=other.project.project_id), metadata=rest(secret)
    )
    assert deleted.rest.data == b"{}"
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await s.GetProject(pb.GetProjectRequest(project_id=other.project.project_id),
                           metadata=bearer(secret))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_owner_has_every_action(services: Services) -> None:
    s = await stub(services)
    _, secret = await services.new_account("erin")
    default = await s.GetDefaultProject(pb.GetDefaultProjectRequest(), metadata=bearer(secret))
    project_id = default.project.project_id
    typed = await s.GetProjectActions(
        pb.GetProjectActionsRequest(project_id=project_id), metadata=bearer(secret)
    )
    assert len(typed.actions) == 15 and typed.actions[0] == pb.PROJECT_ACTION_VIEW_COMPONENT
    as_rest = await s.GetProjectActions(
        pb.GetProjectActionsRequest(project_id=project_id), metadata=rest(secret)
    )
    assert json.loads(as_rest.rest.data)[:3] == ["ViewComponent", "CreateComponent",
                                                 "UpdateComponent"]


async def test_signed_principal_header_is_trusted_and_forged_one_is_not(
    services: Services,
) -> None:
    s = await stub(services)
    account, _ = await services.new_account("frank")
    trusted = sign(Principal(account), INTERNAL_SECRET)
    reply = await s.GetDefaultProject(
        pb.GetDefaultProjectRequest(), metadata=((PRINCIPAL_HEADER, trusted),)
    )
    assert reply.project.owner_account_id == account
    forged = sign(Principal(account), "not-the-secret")
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await s.GetDefaultProject(
            pb.GetDefaultProjectRequest(), metadata=((PRINCIPAL_HEADER, forged),)
        )
    assert rejected.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("secret_kind", "message"),
    [
        ("none", "Unauthorized"),
        ("not-a-uuid", "Invalid Token: Token secret must be a UUID."),
        ("unknown", "Invalid Token: Unknown token secret."),
        ("expired", "Invalid Token: Expired auth token."),
    ],
)
async def test_bad_credentials_are_refused_with_golem_wording(
    services: Services, secret_kind: str, message: str
) -> None:
    s = await stub(services)
    _, expired = await services.new_account("gina", expires_at="2020-01-01T00:00:00Z")
    secret = {"none": "", "not-a-uuid": "abc", "unknown": "7f4f2b1e-3c1a-4f0e-9a57-0a4c7d0f8b11",
              "expired": expired}[secret_kind]
    metadata = rest(secret) if secret else ((REST_MARKER, "1"),)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await s.ListProjects(pb.ListProjectsRequest(), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    trailers = trailers_of(refused.value)
    assert trailers["x-http-status"] == "401"
    assert json.loads(trailers["x-http-body"]) == {"error": message}


async def test_root_token_authenticates_as_admin(services: Services) -> None:
    s = await stub(services)
    _, alice_secret = await services.new_account("alice")
    alices = await s.GetDefaultProject(pb.GetDefaultProjectRequest(),
                                       metadata=bearer(alice_secret))
    as_root = await s.GetProject(
        pb.GetProjectRequest(project_id=alices.project.project_id),
        metadata=bearer(services.root_token),
    )
    assert as_root.project.project_id == alices.project.project_id


async def test_a_remembered_default_project_id_is_checked_against_the_store(
    redis: aioredis.Redis,
) -> None:
    """The service remembers each account's default project id; should the project be gone
    after all (data removed by hand), the next call makes a new one instead of failing."""
    projects = ProjectService(ProjectStore(redis))
    alice = Principal("alice")
    first = await projects.default_project(alice)
    assert (await projects.default_project(alice)) == first
    await redis.flushdb()
    fresh = await projects.default_project(alice)
    assert fresh.id != first.id
    assert (await projects.default_project(alice)) == fresh
