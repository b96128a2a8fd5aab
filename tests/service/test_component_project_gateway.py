"""The component service's client of the project service, against a fake project servicer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from cairn.component.access import ProjectGateway
from cairn.project.v1 import project_service_pb2 as pb
from cairn.project.v1 import project_service_pb2_grpc as pb_grpc
from cairn.runtime.errors import NotFound
from cairn.runtime.principal import Principal


class FakeProjects(pb_grpc.ProjectServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.default_calls = 0
        self.existing = {"p-alice"}

    async def GetDefaultProject(self, request: Any, context: Any) -> pb.GetDefaultProjectResponse:
        self.default_calls += 1
        return pb.GetDefaultProjectResponse(project=pb.Project(project_id="p-alice"))

    async def AuthorizeProjectAction(self, request: Any, context: Any
                                     ) -> pb.AuthorizeProjectActionResponse:
        if request.project_id not in self.existing:
            await context.abort(grpc.StatusCode.NOT_FOUND, "Project not found")
        return pb.AuthorizeProjectActionResponse(project_owner_account_id="alice")


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeProjects, ProjectGateway]]:
    projects = FakeProjects()
    server = grpc.aio.server()
    pb_grpc.add_ProjectServiceServicer_to_server(projects, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield projects, ProjectGateway(f"127.0.0.1:{port}", "secret")
    await server.stop(None)


async def test_the_default_project_id_is_asked_for_once_per_account(
    fake: tuple[FakeProjects, ProjectGateway],
) -> None:
    projects, gateway = fake
    alice = Principal("alice")
    assert [await gateway.default_project_id(alice) for _ in range(3)] == ["p-alice"] * 3
    assert projects.default_calls == 1
    # Should the project be gone after all, the gateway forgets it and asks again.
    projects.existing.clear()
    with pytest.raises(NotFound):
        await gateway.authorize(alice, "p-alice", pb.PROJECT_ACTION_VIEW_COMPONENT)
    await gateway.default_project_id(alice)
    assert projects.default_calls == 2
