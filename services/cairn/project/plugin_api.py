"""gRPC surface of the plugin registry and of project-level plugin installations."""

from __future__ import annotations

from typing import Any

import grpc

from cairn.component.model import PluginInstallation
from cairn.project.plugin_model import PluginDefinition, PluginScope, parse_definition
from cairn.project.plugins import PluginService
from cairn.project.v1 import plugin_service_pb2 as pb
from cairn.project.v1 import plugin_service_pb2_grpc as pb_grpc
from cairn.runtime import jsonbody
from cairn.runtime.callers import CallerResolver
from cairn.runtime.rest import is_rest, json_body

Context = grpc.aio.ServicerContext[Any, Any]


def scope_to_pb(scope: PluginScope) -> pb.PluginScope:
    if scope.kind == "Component":
        return pb.PluginScope(component_id=scope.target)
    if scope.kind == "Project":
        return pb.PluginScope(project_id=scope.target)
    message = pb.PluginScope()
    getattr(message, "global").SetInParent()  # `global` is a Python keyword
    return message


def definition_to_pb(plugin: PluginDefinition) -> pb.PluginDefinition:
    message = pb.PluginDefinition(
        name=plugin.name,
        version=plugin.version,
        description=plugin.description,
        icon=plugin.icon,
        homepage=plugin.homepage,
        scope=scope_to_pb(plugin.scope),
        owner_account_id=plugin.owner_account_id,
    )
    specs = plugin.specs
    if specs["type"] == "ComponentTransformer":
        message.component_transformer.CopyFrom(pb.ComponentTransformerSpec(
            provided_wit_package=specs["providedWitPackage"],
            json_schema=specs["jsonSchema"],
            validate_url=specs["validateUrl"],
            transform_url=specs["transformUrl"],
        ))
    else:
        message.oplog_processor.CopyFrom(pb.OplogProcessorSpec(
            component_id=specs["componentId"], component_version=specs["componentVersion"]
        ))
    return message


def definition_json_from_pb(message: pb.PluginDefinition) -> dict[str, Any]:
    """A typed definition as Golem's JSON, so one parser validates both kinds of client."""
    scope: dict[str, Any] = {"type": "Global"}
    if message.scope.WhichOneof("scope") == "component_id":
        scope = {"type": "Component", "componentId": message.scope.component_id}
    elif message.scope.WhichOneof("scope") == "project_id":
        scope = {"type": "Project", "projectId": message.scope.project_id}
    specs: dict[str, Any] | None = None
    if message.WhichOneof("specs") == "component_transformer":
        t = message.component_transformer
        specs = {
            "type": "ComponentTransformer",
            "providedWitPackage": t.provided_wit_package if t.HasField("provided_wit_package")
            else None,
            "jsonSchema": t.json_schema if t.HasField("json_schema") else None,
            "validateUrl": t.validate_url,
            "transformUrl": t.transform_url,
        }
    elif message.WhichOneof("specs") == "oplog_processor":
        specs = {
            "type": "OplogProcessor",
            "componentId": message.oplog_processor.component_id,
            "componentVersion": message.oplog_processor.component_version,
        }
    return {
        "name": message.name, "version": message.version, "description": message.description,
        "icon": list(message.icon), "homepage": message.homepage, "specs": specs, "scope": scope,
    }


def installation_to_pb(installation: PluginInstallation) -> pb.PluginInstallation:
    return pb.PluginInstallation(
        id=installation.id,
        name=installation.name,
        version=installation.version,
        priority=installation.priority,
        parameters=installation.parameters,
    )


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _empty(context: Context) -> pb.PluginEmptyResponse:
    return pb.PluginEmptyResponse(rest=json_body({}) if is_rest(context) else None)


class PluginApi(pb_grpc.PluginServiceServicer):
    def __init__(self, plugins: PluginService, callers: CallerResolver) -> None:
        self._plugins = plugins
        self._callers = callers

    @staticmethod
    def _many(
        plugins: list[PluginDefinition], context: Context
    ) -> pb.PluginDefinitionsResponse:
        if is_rest(context):
            return pb.PluginDefinitionsResponse(rest=json_body([p.to_json() for p in plugins]))
        return pb.PluginDefinitionsResponse(plugins=[definition_to_pb(p) for p in plugins])

    @staticmethod
    def _one(plugin: PluginDefinition, context: Context) -> pb.PluginDefinitionResponse:
        if is_rest(context):
            return pb.PluginDefinitionResponse(rest=json_body(plugin.to_json()))
        return pb.PluginDefinitionResponse(plugin=definition_to_pb(plugin))

    async def ListPlugins(
        self, request: pb.ListPluginsRequest, context: Context
    ) -> pb.PluginDefinitionsResponse:
        caller = await self._callers.resolve(context)
        plugins = await self._plugins.list_plugins(caller, _optional(request, "scope"))
        return self._many(plugins, context)

    async def ListPluginVersions(
        self, request: pb.ListPluginVersionsRequest, context: Context
    ) -> pb.PluginDefinitionsResponse:
        caller = await self._callers.resolve(context)
        return self._many(await self._plugins.versions(caller, request.name), context)

    async def CreatePlugin(
        self, request: pb.CreatePluginRequest, context: Context
    ) -> pb.PluginEmptyResponse:
        caller = await self._callers.resolve(context)
        if request.HasField("rest"):
            data = jsonbody.parse_request(request.rest.data or b"null", "Invalid JSON body: ")
        else:
            data = definition_json_from_pb(request.plugin)
        await self._plugins.create(caller, parse_definition(data, caller.account_id))
        return _empty(context)

    async def GetPlugin(
        self, request: pb.PluginRef, context: Context
    ) -> pb.PluginDefinitionResponse:
        caller = await self._callers.resolve(context)
        return self._one(await self._plugins.get(caller, request.name, request.version), context)

    async def DeletePlugin(self, request: pb.PluginRef, context: Context) -> pb.PluginEmptyResponse:
        caller = await self._callers.resolve(context)
        await self._plugins.delete(caller, request.name, request.version)
        return _empty(context)

    async def AuthorizeComponentPluginInstallation(
        self, request: pb.AuthorizeComponentPluginInstallationRequest, context: Context
    ) -> pb.PluginDefinitionResponse:
        caller = await self._callers.resolve(context)
        plugin = await self._plugins.authorize_component_installation(
            caller, request.project_id, request.component_id, request.name, request.version
        )
        return pb.PluginDefinitionResponse(plugin=definition_to_pb(plugin))


class ProjectPluginApi(pb_grpc.ProjectPluginServiceServicer):
    def __init__(self, plugins: PluginService, callers: CallerResolver) -> None:
        self._plugins = plugins
        self._callers = callers

    async def ListProjectPluginInstallations(
        self, request: pb.ProjectPluginInstallationsRequest, context: Context
    ) -> pb.ProjectPluginInstallationsResponse:
        caller = await self._callers.resolve(context)
        found = await self._plugins.project_installations(caller, request.project_id)
        if is_rest(context):
            return pb.ProjectPluginInstallationsResponse(
                rest=json_body([i.to_json() for i in found])
            )
        return pb.ProjectPluginInstallationsResponse(
            installations=[installation_to_pb(i) for i in found]
        )

    async def InstallProjectPlugin(
        self, request: pb.InstallProjectPluginRequest, context: Context
    ) -> pb.ProjectPluginInstallationResponse:
        caller = await self._callers.resolve(context)
        installation = await self._plugins.install_on_project(
            caller,
            request.project_id,
            name=_optional(request, "name"),
            version=_optional(request, "version"),
            priority=_optional(request, "priority"),
            parameters=dict(request.parameters),
        )
        if is_rest(context):
            return pb.ProjectPluginInstallationResponse(rest=json_body(installation.to_json()))
        return pb.ProjectPluginInstallationResponse(
            installation=installation_to_pb(installation)
        )

    async def UpdateProjectPluginInstallation(
        self, request: pb.UpdateProjectPluginInstallationRequest, context: Context
    ) -> pb.PluginEmptyResponse:
        caller = await self._callers.resolve(context)
        await self._plugins.update_project_installation(
            caller,
            request.project_id,
            request.installation_id,
            priority=_optional(request, "priority"),
            parameters=dict(request.parameters),
        )
        return _empty(context)

    async def UninstallProjectPlugin(
        self, request: pb.UninstallProjectPluginRequest, context: Context
    ) -> pb.PluginEmptyResponse:
        caller = await self._callers.resolve(context)
        await self._plugins.uninstall_from_project(
            caller, request.project_id, request.installation_id
        )
        return _empty(context)
