"""gRPC surface of the project service: proto <-> domain, and Golem's JSON for REST callers."""

from __future__ import annotations

from typing import Any

import grpc

from cairn.project.model import Project, ProjectAction, ProjectType
from cairn.project.service import ProjectService
from cairn.project.v1 import project_service_pb2 as pb
from cairn.project.v1 import project_service_pb2_grpc as pb_grpc
from cairn.runtime.callers import CallerResolver
from cairn.runtime.rest import is_rest, json_body

Context = grpc.aio.ServicerContext[Any, Any]

_PROJECT_TYPES = {
    ProjectType.DEFAULT: pb.PROJECT_TYPE_DEFAULT,
    ProjectType.NON_DEFAULT: pb.PROJECT_TYPE_NON_DEFAULT,
}
# Domain enum order equals proto enum numbering (1-based).
_ACTION_TO_PB: dict[ProjectAction, Any] = {a: i for i, a in enumerate(ProjectAction, start=1)}
_PB_TO_ACTION = {i: a for a, i in _ACTION_TO_PB.items()}


def project_to_pb(p: Project) -> pb.Project:
    return pb.Project(
        project_id=p.id,
        name=p.name,
        owner_account_id=p.owner_account_id,
        description=p.description,
        default_environment_id=p.default_environment_id,
        project_type=_PROJECT_TYPES[p.project_type],
    )


def action_from_pb(value: int) -> ProjectAction | None:
    return _PB_TO_ACTION.get(value)


class ProjectApi(pb_grpc.ProjectServiceServicer):
    def __init__(self, projects: ProjectService, callers: CallerResolver) -> None:
        self._projects = projects
        self._callers = callers

    async def GetDefaultProject(
        self, request: pb.GetDefaultProjectRequest, context: Context
    ) -> pb.GetDefaultProjectResponse:
        project = await self._projects.default_project(await self._callers.resolve(context))
        if is_rest(context):
            return pb.GetDefaultProjectResponse(rest=json_body(project.to_json()))
        return pb.GetDefaultProjectResponse(project=project_to_pb(project))

    async def ListProjects(
        self, request: pb.ListProjectsRequest, context: Context
    ) -> pb.ListProjectsResponse:
        name = request.project_name if request.HasField("project_name") else None
        projects = await self._projects.list_projects(await self._callers.resolve(context), name)
        if is_rest(context):
            return pb.ListProjectsResponse(rest=json_body([p.to_json() for p in projects]))
        return pb.ListProjectsResponse(projects=[project_to_pb(p) for p in projects])

    async def CreateProject(
        self, request: pb.CreateProjectRequest, context: Context
    ) -> pb.CreateProjectResponse:
        def field(name: str) -> str | None:
            return getattr(request, name) if request.HasField(name) else None

        project = await self._projects.create_project(
            await self._callers.resolve(context),
            field("name"),
            field("owner_account_id"),
            field("description"),
        )
        if is_rest(context):
            return pb.CreateProjectResponse(rest=json_body(project.to_json()))
        return pb.CreateProjectResponse(project=project_to_pb(project))

    async def GetProject(
        self, request: pb.GetProjectRequest, context: Context
    ) -> pb.GetProjectResponse:
        caller = await self._callers.resolve(context)
        project = await self._projects.get_project(caller, request.project_id)
        if is_rest(context):
            return pb.GetProjectResponse(rest=json_body(project.to_json()))
        return pb.GetProjectResponse(project=project_to_pb(project))

    async def DeleteProject(
        self, request: pb.DeleteProjectRequest, context: Context
    ) -> pb.DeleteProjectResponse:
        caller = await self._callers.resolve(context)
        await self._projects.delete_project(caller, request.project_id)
        return pb.DeleteProjectResponse(rest=json_body({}) if is_rest(context) else None)

    async def GetProjectActions(
        self, request: pb.GetProjectActionsRequest, context: Context
    ) -> pb.GetProjectActionsResponse:
        caller = await self._callers.resolve(context)
        actions = await self._projects.actions(caller, request.project_id)
        if is_rest(context):
            return pb.GetProjectActionsResponse(rest=json_body([a.value for a in actions]))
        return pb.GetProjectActionsResponse(actions=[_ACTION_TO_PB[a] for a in actions])

    async def AuthorizeProjectAction(
        self, request: pb.AuthorizeProjectActionRequest, context: Context
    ) -> pb.AuthorizeProjectActionResponse:
        caller = await self._callers.resolve(context)
        project = await self._projects.get_project(
            caller, request.project_id, action_from_pb(request.action)
        )
        return pb.AuthorizeProjectActionResponse(project_owner_account_id=project.owner_account_id)
