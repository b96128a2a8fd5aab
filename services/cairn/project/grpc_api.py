"""gRPC surface of the project service: proto <-> domain, and Golem's JSON for REST callers."""

from __future__ import annotations

from typing import Any

import grpc
from google.api import httpbody_pb2

from cairn.project.model import (
    Project,
    ProjectAction,
    ProjectGrant,
    ProjectPolicy,
    ProjectType,
    parse_action,
)
from cairn.project.service import ProjectService
from cairn.project.v1 import project_grant_service_pb2 as grant_pb
from cairn.project.v1 import project_grant_service_pb2_grpc as grant_grpc
from cairn.project.v1 import project_service_pb2 as pb
from cairn.project.v1 import project_service_pb2_grpc as pb_grpc
from cairn.runtime import jsonbody
from cairn.runtime.callers import CallerResolver
from cairn.runtime.errors import InvalidRequest, Problems
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


# --- policies and grants ------------------------------------------------------------------

PolicyFields = tuple[str | None, list[ProjectAction] | None]


def _json_object(body: httpbody_pb2.HttpBody) -> dict[str, Any]:
    data = jsonbody.parse_request(body.data or b"null", "Invalid JSON body: ")
    if not isinstance(data, dict):
        raise InvalidRequest("Invalid body: expected a JSON object")
    return data


def _optional_string(data: dict[str, Any], key: str, problems: Problems) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        problems.add(key, f"Invalid field {key}: expected a string")
        return None
    return value


def parse_actions(value: Any, problems: Problems) -> list[ProjectAction] | None:
    """`projectActions` as `{"actions":[...]}` (2024+) or a bare list (2023 docs)."""
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"actions"}:
        value = value["actions"]
    if not isinstance(value, list):
        problems.add("projectActions",
                     "Invalid field projectActions: expected {\"actions\": [...]} or a list")
        return None
    actions = []
    for item in value:
        try:
            actions.append(parse_action(item))
        except ValueError as err:
            problems.add("projectActions", str(err))
    return actions


def _pb_actions(values: Any) -> list[ProjectAction]:
    actions = []
    for value in values:
        action = action_from_pb(value)
        if action is None:
            raise InvalidRequest.for_field("actions", f"Invalid project action: {value}")
        actions.append(action)
    return actions


def policy_to_pb(p: ProjectPolicy) -> grant_pb.ProjectPolicy:
    return grant_pb.ProjectPolicy(
        id=p.id, name=p.name, actions=[_ACTION_TO_PB[a] for a in p.actions]
    )


def grant_to_pb(g: ProjectGrant) -> grant_pb.ProjectGrant:
    return grant_pb.ProjectGrant(
        id=g.id,
        grantee_account_id=g.grantee_account_id,
        grantor_project_id=g.project_id,
        project_policy_id=g.policy_id,
    )


class ProjectPolicyApi(grant_grpc.ProjectPolicyServiceServicer):
    def __init__(self, projects: ProjectService, callers: CallerResolver) -> None:
        self._projects = projects
        self._callers = callers

    @staticmethod
    def _reply(policy: ProjectPolicy, context: Context) -> grant_pb.ProjectPolicyResponse:
        if is_rest(context):
            return grant_pb.ProjectPolicyResponse(rest=json_body(policy.to_json()))
        return grant_pb.ProjectPolicyResponse(policy=policy_to_pb(policy))

    async def CreateProjectPolicy(
        self, request: grant_pb.CreateProjectPolicyRequest, context: Context
    ) -> grant_pb.ProjectPolicyResponse:
        caller = await self._callers.resolve(context)
        name: str | None
        actions: list[ProjectAction] | None
        if request.HasField("rest"):
            data = _json_object(request.rest)
            problems = Problems()
            name = _optional_string(data, "name", problems)
            actions = parse_actions(data.get("projectActions"), problems)
            problems.raise_if_any()
        else:
            name, actions = request.name, _pb_actions(request.actions)
        policy = await self._projects.create_policy(caller, name, actions)
        return self._reply(policy, context)

    async def GetProjectPolicy(
        self, request: grant_pb.GetProjectPolicyRequest, context: Context
    ) -> grant_pb.ProjectPolicyResponse:
        caller = await self._callers.resolve(context)
        policy = await self._projects.get_policy(caller, request.project_policy_id)
        return self._reply(policy, context)


class ProjectGrantApi(grant_grpc.ProjectGrantServiceServicer):
    def __init__(self, projects: ProjectService, callers: CallerResolver) -> None:
        self._projects = projects
        self._callers = callers

    @staticmethod
    def _reply(grant: ProjectGrant, context: Context) -> grant_pb.ProjectGrantResponse:
        if is_rest(context):
            return grant_pb.ProjectGrantResponse(rest=json_body(grant.to_json()))
        return grant_pb.ProjectGrantResponse(grant=grant_to_pb(grant))

    async def ListProjectGrants(
        self, request: grant_pb.ListProjectGrantsRequest, context: Context
    ) -> grant_pb.ListProjectGrantsResponse:
        caller = await self._callers.resolve(context)
        grants = await self._projects.list_grants(caller, request.project_id)
        if is_rest(context):
            return grant_pb.ListProjectGrantsResponse(
                rest=json_body([g.to_json() for g in grants])
            )
        return grant_pb.ListProjectGrantsResponse(grants=[grant_to_pb(g) for g in grants])

    async def CreateProjectGrant(
        self, request: grant_pb.CreateProjectGrantRequest, context: Context
    ) -> grant_pb.ProjectGrantResponse:
        caller = await self._callers.resolve(context)
        if request.HasField("rest"):
            data = _json_object(request.rest)
            problems = Problems()
            grantee = _optional_string(data, "granteeAccountId", problems)
            policy_id = _optional_string(data, "projectPolicyId", problems)
            policy_name = _optional_string(data, "projectPolicyName", problems)
            actions = parse_actions(data.get("projectActions"), problems)
            problems.raise_if_any()
        else:
            grantee = request.grantee_account_id
            policy_id = (
                request.project_policy_id if request.HasField("project_policy_id") else None
            )
            policy_name = (
                request.project_policy_name if request.HasField("project_policy_name") else None
            )
            actions = _pb_actions(request.project_actions)
        grant = await self._projects.create_grant(
            caller, request.project_id, grantee, policy_id, actions, policy_name
        )
        return self._reply(grant, context)

    async def GetProjectGrant(
        self, request: grant_pb.ProjectGrantRequest, context: Context
    ) -> grant_pb.ProjectGrantResponse:
        caller = await self._callers.resolve(context)
        grant = await self._projects.get_grant(caller, request.project_id, request.grant_id)
        return self._reply(grant, context)

    async def DeleteProjectGrant(
        self, request: grant_pb.ProjectGrantRequest, context: Context
    ) -> grant_pb.DeleteProjectGrantResponse:
        caller = await self._callers.resolve(context)
        await self._projects.delete_grant(caller, request.project_id, request.grant_id)
        return grant_pb.DeleteProjectGrantResponse(
            rest=json_body({}) if is_rest(context) else None
        )
