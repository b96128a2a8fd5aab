"""gRPC surface of the component service: the Component API and its Template API alias.

Each handler resolves the caller, calls `ComponentService`, and answers REST callers (marked by
Envoy) with Golem's exact JSON in `rest`, native gRPC callers with typed messages (convert.py).
Uploads are spooled to temporary files (ingest.py) which are deleted when the call ends.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.api import httpbody_pb2

from cairn.component.convert import (
    component_to_pb,
    component_type_from_pb,
    permissions_from_pb,
    plugin_to_pb,
)
from cairn.component.ingest import (
    ComponentQuery,
    UploadForm,
    first_message,
    parse_query,
    read_native_parts,
    read_raw_wasm,
    read_rest_form,
    wasm_of,
)
from cairn.component.model import ComponentType, ComponentVersion, parse_version
from cairn.component.service import (
    ComponentAlreadyExists,
    ComponentService,
    FilesUpload,
    WasmUpload,
)
from cairn.component.uploads import (
    FormLimits,
    TempFileSink,
    UploadError,
    parse_component_type,
)
from cairn.component.v1 import component_service_pb2 as pb
from cairn.component.v1 import component_service_pb2_grpc as pb_grpc
from cairn.component.v1 import template_service_pb2 as template_pb
from cairn.component.v1 import template_service_pb2_grpc as template_grpc
from cairn.runtime.callers import CallerResolver
from cairn.runtime.errors import ErrorStyle, InvalidRequest, NotFound
from cairn.runtime.principal import Principal
from cairn.runtime.rest import is_rest, json_body

Context = grpc.aio.ServicerContext[Any, Any]
DOWNLOAD_CONTENT_TYPE = "application/octet-stream"
# Headers of a download: what the streamed bytes must add up to, and which version they are.
SIZE_HEADER = "x-cairn-component-size"
SHA256_HEADER = "x-cairn-component-sha256"
VERSION_HEADER = "x-cairn-component-version"


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _component_type(raw: str | None) -> ComponentType | None:
    """A `componentType` form value or `component_type` query value; None when absent."""
    if raw is None or not raw.strip():
        return None
    try:
        return parse_component_type(raw)
    except UploadError as err:
        raise InvalidRequest(err.message) from None


class _Uploads:
    """Spooling shared by both APIs; one `TempFileSink` per call, cleaned up at its end."""

    def __init__(
        self,
        service: ComponentService,
        spool_dir: Path | None,
        files_limit: int,
        form_limits: FormLimits,
    ):
        self._service = service
        self._spool_dir = spool_dir
        self._files_limit = files_limit
        self._form_limits = form_limits

    def sink(self) -> TempFileSink:
        limit = self._service.max_component_bytes
        return TempFileSink(
            self._spool_dir,
            max_sizes={"component": limit, "template": limit, "files": self._files_limit},
        )

    async def create(
        self,
        caller: Principal,
        requests: AsyncIterator[Any],
        context: Context,
        *,
        query_parts: tuple[str, ...],
        component_parts: tuple[str, ...],
    ) -> ComponentVersion:
        first = await first_message(requests)
        with self.sink() as sink:
            if is_rest(context):
                form = await read_rest_form(
                    first, requests, sink,
                    text_parts={*query_parts, "name", "componentType", "filesPermissions"},
                    component_parts=component_parts,
                    limits=self._form_limits,
                )
                query_part = next((p for p in query_parts if p in form.texts), None)
                if query_part is None and "name" in form.texts:
                    # Golem's open-source server names the component in a plain `name` part.
                    query = ComponentQuery(None, form.texts["name"])
                else:
                    query_part = query_part or query_parts[0]
                    query = parse_query(form.texts.get(query_part), field=query_part)
                wasm = self._required_component(form, component_parts[0])
                return await self._service.create(
                    caller,
                    project_id=query.project_id,
                    name=query.name,
                    component_type=_component_type(form.texts.get("componentType")),
                    wasm=wasm,
                    files=form.files_upload(form.texts.get("filesPermissions")),
                )
            if first.WhichOneof("part") != "header":
                raise InvalidRequest("The first message must carry the header")
            header = first.header
            parts = await read_native_parts(requests, sink)
            return await self._service.create(
                caller,
                project_id=_optional(header, "project_id"),
                name=header.component_name,
                component_type=component_type_from_pb(header.component_type),
                wasm=self._native_component(parts),
                files=_native_files(parts, header.files_permissions),
            )

    async def update(
        self, caller: Principal, requests: AsyncIterator[Any], context: Context
    ) -> ComponentVersion:
        first = await first_message(requests)
        with self.sink() as sink:
            if is_rest(context):
                form = await read_rest_form(
                    first, requests, sink,
                    text_parts={"componentType", "filesPermissions"},
                    component_parts=("component",),
                    limits=self._form_limits,
                )
                return await self._service.new_version(
                    caller,
                    first.component_id,
                    component_type=_component_type(form.texts.get("componentType")),
                    wasm=self._required_component(form, "component"),
                    files=form.files_upload(form.texts.get("filesPermissions")),
                    reason="update",
                )
            if first.WhichOneof("part") != "header":
                raise InvalidRequest("The first message must carry the header")
            parts = await read_native_parts(requests, sink)
            return await self._service.new_version(
                caller,
                first.component_id,
                component_type=component_type_from_pb(first.header.component_type),
                wasm=self._native_component(parts),
                files=_native_files(parts, first.header.files_permissions),
                reason="update",
            )

    async def upload(
        self,
        caller: Principal,
        requests: AsyncIterator[Any],
        context: Context,
        *,
        with_type: bool,
    ) -> ComponentVersion:
        first = await first_message(requests)
        component_type = (
            _component_type(_optional(first, "component_type")) if with_type else None
        )
        with self.sink() as sink:
            wasm = await read_raw_wasm(first, requests, sink, rest=is_rest(context))
            return await self._service.new_version(
                caller,
                first.component_id,
                component_type=component_type,
                wasm=wasm,
                files=None,
                reason="upload",
            )

    @staticmethod
    def _required_component(form: UploadForm, name: str) -> WasmUpload:
        if form.component is None:
            raise InvalidRequest(f"Missing required form field(s): {name}")
        return wasm_of(form.component)

    @staticmethod
    def _native_component(parts: dict[str, Any]) -> WasmUpload:
        if "component" not in parts:
            raise InvalidRequest("Missing component: send component_chunk messages")
        return wasm_of(parts["component"])


def _native_files(parts: dict[str, Any], permissions: Any) -> FilesUpload | None:
    mapping = permissions_from_pb(permissions)
    archive = parts.get("files")
    if archive is None and not mapping:
        return None
    return FilesUpload(None if archive is None else archive.path, mapping)


async def _stream_wasm(
    service: ComponentService,
    caller: Principal,
    context: Context,
    component_id: str,
    version: int | None,
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """The version's WASM as HttpBody messages; errors before the first byte are shaped.

    A failure after the first byte cannot change an HTTP/1.1 response that already said 200, so
    the expected size and SHA-256 go out first as headers a client can check the bytes against.
    """
    found, reader = await service.open_wasm(caller, component_id, version)
    async with reader:
        await context.send_initial_metadata((
            (SIZE_HEADER, str(found.size)),
            (SHA256_HEADER, found.sha256),
            (VERSION_HEADER, str(found.version)),
        ))
        first = True
        async for chunk in reader:
            if first:
                yield httpbody_pb2.HttpBody(content_type=DOWNLOAD_CONTENT_TYPE, data=chunk)
                first = False
            else:
                yield httpbody_pb2.HttpBody(data=chunk)
        if first:  # an empty blob still answers with the content type
            yield httpbody_pb2.HttpBody(content_type=DOWNLOAD_CONTENT_TYPE)


class _VersionReplies:
    """What the Component and Template APIs share: one service, versions in typed replies for
    gRPC and in the API's own JSON shape (`_rest_json`) for REST."""

    def __init__(
        self,
        service: ComponentService,
        callers: CallerResolver,
        *,
        spool_dir: Path | None = None,
        max_files_archive_bytes: int = 500_000_000,
        form_limits: FormLimits = FormLimits(),
    ) -> None:
        self._service = service
        self._callers = callers
        self._uploads = _Uploads(service, spool_dir, max_files_archive_bytes, form_limits)

    @staticmethod
    def _rest_json(version: ComponentVersion) -> Any:
        return version.to_json()

    def _one(self, version: ComponentVersion, context: Context) -> pb.ComponentResponse:
        if is_rest(context):
            return pb.ComponentResponse(rest=json_body(self._rest_json(version)))
        return pb.ComponentResponse(component=component_to_pb(version))

    def _many(self, versions: list[ComponentVersion], context: Context) -> pb.ComponentsResponse:
        if is_rest(context):
            return pb.ComponentsResponse(rest=json_body([self._rest_json(v) for v in versions]))
        return pb.ComponentsResponse(components=[component_to_pb(v) for v in versions])


class ComponentApi(_VersionReplies, pb_grpc.ComponentServiceServicer):

    async def ListComponents(
        self, request: pb.ListComponentsRequest, context: Context
    ) -> pb.ComponentsResponse:
        caller = await self._callers.resolve(context)
        found = await self._service.list_components(
            caller, _optional(request, "project_id"), _optional(request, "component_name")
        )
        return self._many(found, context)

    async def CreateComponent(
        self, request_iterator: AsyncIterator[pb.CreateComponentRequest], context: Context
    ) -> pb.ComponentResponse:
        caller = await self._callers.resolve(context)
        created = await self._uploads.create(
            caller, aiter(request_iterator), context,
            query_parts=("query",), component_parts=("component",),
        )
        return self._one(created, context)

    async def GetComponentVersions(
        self, request: pb.GetComponentVersionsRequest, context: Context
    ) -> pb.ComponentsResponse:
        caller = await self._callers.resolve(context)
        return self._many(await self._service.all_versions(caller, request.component_id), context)

    async def UploadComponent(
        self, request_iterator: AsyncIterator[pb.UploadComponentRequest], context: Context
    ) -> pb.ComponentResponse:
        caller = await self._callers.resolve(context)
        version = await self._uploads.upload(
            caller, aiter(request_iterator), context, with_type=True
        )
        return self._one(version, context)

    async def UpdateComponent(
        self, request_iterator: AsyncIterator[pb.UpdateComponentRequest], context: Context
    ) -> pb.ComponentResponse:
        caller = await self._callers.resolve(context)
        version = await self._uploads.update(caller, aiter(request_iterator), context)
        return self._one(version, context)

    async def DownloadComponent(
        self, request: pb.DownloadComponentRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        caller = await self._callers.resolve(context)
        version = _optional(request, "version")
        async for body in _stream_wasm(
            self._service, caller, context, request.component_id, version
        ):
            yield body

    async def GetComponentVersion(
        self, request: pb.GetComponentVersionRequest, context: Context
    ) -> pb.ComponentResponse:
        caller = await self._callers.resolve(context)
        version = parse_version(request.version)
        return self._one(
            await self._service.version(caller, request.component_id, version), context
        )

    async def GetLatestComponent(
        self, request: pb.GetLatestComponentRequest, context: Context
    ) -> pb.ComponentResponse:
        caller = await self._callers.resolve(context)
        return self._one(await self._service.latest(caller, request.component_id), context)

    async def ListInstalledPlugins(
        self, request: pb.ListInstalledPluginsRequest, context: Context
    ) -> pb.PluginInstallationsResponse:
        caller = await self._callers.resolve(context)
        version = None if request.version == "latest" else parse_version(request.version)
        plugins = await self._service.installed_plugins(caller, request.component_id, version)
        if is_rest(context):
            return pb.PluginInstallationsResponse(rest=json_body([p.to_json() for p in plugins]))
        return pb.PluginInstallationsResponse(installations=[plugin_to_pb(p) for p in plugins])

    async def InstallPlugin(
        self, request: pb.InstallPluginRequest, context: Context
    ) -> pb.PluginInstallationResponse:
        caller = await self._callers.resolve(context)
        installation = await self._service.install_plugin(
            caller,
            request.component_id,
            name=_optional(request, "name"),
            version=_optional(request, "version"),
            priority=_optional(request, "priority"),
            parameters=dict(request.parameters),
        )
        if is_rest(context):
            return pb.PluginInstallationResponse(rest=json_body(installation.to_json()))
        return pb.PluginInstallationResponse(installation=plugin_to_pb(installation))

    async def UpdatePluginInstallation(
        self, request: pb.UpdatePluginInstallationRequest, context: Context
    ) -> pb.EmptyResponse:
        caller = await self._callers.resolve(context)
        await self._service.update_plugin(
            caller,
            request.component_id,
            request.installation_id,
            priority=_optional(request, "priority"),
            parameters=dict(request.parameters),
        )
        return pb.EmptyResponse(rest=json_body({}) if is_rest(context) else None)

    async def UninstallPlugin(
        self, request: pb.UninstallPluginRequest, context: Context
    ) -> pb.EmptyResponse:
        caller = await self._callers.resolve(context)
        await self._service.uninstall_plugin(
            caller, request.component_id, request.installation_id
        )
        return pb.EmptyResponse(rest=json_body({}) if is_rest(context) else None)


# -- Template API (2023) ------------------------------------------------------------------


class TemplateNotFound(NotFound):
    """The 2023 Template API answered 404 with `{"message": ...}`."""

    def rest_body(self, style: ErrorStyle) -> str:
        return json_text({"message": self.message})


class TemplateAlreadyExists(ComponentAlreadyExists):
    """The 2023 Template API answered 409 with `{"component_id": ...}`."""

    def rest_body(self, style: ErrorStyle) -> str:
        return json_text({"component_id": self.component_id})


def json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


@contextlib.contextmanager
def template_errors() -> Iterator[None]:
    """Re-raise the component errors whose body the Template API spelled differently."""
    try:
        yield
    except ComponentAlreadyExists as err:
        raise TemplateAlreadyExists(err.component_id) from None
    except NotFound as err:
        if isinstance(err, TemplateNotFound):
            raise
        raise TemplateNotFound(*err.messages) from None


class TemplateApi(_VersionReplies, template_grpc.TemplateServiceServicer):
    @staticmethod
    def _rest_json(version: ComponentVersion) -> Any:
        return version.to_template_json()

    async def ListTemplates(
        self, request: template_pb.ListTemplatesRequest, context: Context
    ) -> pb.ComponentsResponse:
        caller = await self._callers.resolve(context)
        with template_errors():
            project_id = _optional(request, "project_id")
            if project_id is None:
                project_id = _optional(request, "documented_project_id")
            found = await self._service.list_components(
                caller, project_id, _optional(request, "template_name")
            )
        return self._many(found, context)

    async def CreateTemplate(
        self, request_iterator: AsyncIterator[pb.CreateComponentRequest], context: Context
    ) -> pb.ComponentResponse:
        caller = await self._callers.resolve(context)
        with template_errors():
            created = await self._uploads.create(
                caller, aiter(request_iterator), context,
                query_parts=("query", "field0"), component_parts=("template", "component"),
            )
        return self._one(created, context)

    async def GetTemplateVersions(
        self, request: pb.GetComponentVersionsRequest, context: Context
    ) -> pb.ComponentsResponse:
        caller = await self._callers.resolve(context)
        with template_errors():
            versions = await self._service.all_versions(caller, request.component_id)
        return self._many(versions, context)

    async def UploadTemplate(
        self, request_iterator: AsyncIterator[template_pb.UploadTemplateRequest], context: Context
    ) -> pb.ComponentResponse:
        caller = await self._callers.resolve(context)
        with template_errors():
            version = await self._uploads.upload(
                caller, aiter(request_iterator), context, with_type=False
            )
        return self._one(version, context)

    async def DownloadTemplate(
        self, request: pb.DownloadComponentRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        caller = await self._callers.resolve(context)
        version = _optional(request, "version")
        with template_errors():
            async for body in _stream_wasm(
                self._service, caller, context, request.component_id, version
            ):
                yield body

    async def GetLatestTemplateVersion(
        self, request: pb.GetLatestComponentRequest, context: Context
    ) -> template_pb.LatestVersionResponse:
        caller = await self._callers.resolve(context)
        with template_errors():
            latest = await self._service.latest(caller, request.component_id)
        if is_rest(context):
            return template_pb.LatestVersionResponse(rest=json_body(latest.version))
        return template_pb.LatestVersionResponse(version=latest.version)


__all__ = ["ComponentApi", "TemplateApi"]
