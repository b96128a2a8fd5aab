"""Who may do what with a component, and how much: the calls to the project and auth services.

Every component operation names a project action; `ProjectGateway.authorize` asks the project
service's AuthorizeProjectAction on the caller's behalf, so ownership and grants are decided there
and nowhere else. The caller's default project comes from the same service. `UsageLedger` counts
uploads against the project owner's plan limits in the auth service.
"""

from __future__ import annotations

import grpc

from cairn.auth.v1 import auth_service_pb2 as auth_pb
from cairn.auth.v1 import auth_service_pb2_grpc as auth_grpc
from cairn.project.v1 import plugin_service_pb2 as plugin_pb
from cairn.project.v1 import plugin_service_pb2_grpc as plugin_grpc
from cairn.project.v1 import project_service_pb2 as project_pb
from cairn.project.v1 import project_service_pb2_grpc as project_grpc
from cairn.runtime.callers import as_caller
from cairn.runtime.channels import internal_channel, reconnected, unavailable_peer
from cairn.runtime.errors import (
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from cairn.runtime.principal import Principal

# Who the component service is when it acts on its own (releasing a dead process's usage).
COMPONENT_SERVICE = Principal("cairn-component-service")

# The project actions component operations need (proto enum values of cairn.project.v1).
# Plugin installations are component changes, as in Golem's Dec 2024 component service (the
# ProjectAction enum of that version has no plugin actions): viewing them needs ViewComponent,
# changing them UpdateComponent.
VIEW_COMPONENT = project_pb.PROJECT_ACTION_VIEW_COMPONENT
CREATE_COMPONENT = project_pb.PROJECT_ACTION_CREATE_COMPONENT
UPDATE_COMPONENT = project_pb.PROJECT_ACTION_UPDATE_COMPONENT

_TIMEOUT_SECONDS = 5.0
# Accounts whose default project id a gateway remembers (the ids never change).
KNOWN_DEFAULTS_MAX = 10_000


def _as_service_error(err: grpc.aio.AioRpcError, service: str) -> ServiceError:
    """A peer service's answer, re-raised with the same meaning for our client."""
    message = err.details() or f"The {service} service failed"
    mapping: dict[grpc.StatusCode, type[ServiceError]] = {
        grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
        grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    }
    error_type = mapping.get(err.code())
    if error_type is not None:
        return error_type(message)
    unreachable = unavailable_peer(err, service)
    return unreachable or Unavailable(f"The {service} service failed: {message}")


class ProjectGateway:
    """The project service, called with the caller's signed principal."""

    def __init__(self, project_address: str, internal_secret: str) -> None:
        self._address = project_address
        self._secret = internal_secret
        self._channel: grpc.aio.Channel | None = None
        # account id -> its default project's id: a default project is never deleted or
        # replaced, so asking once saves a call to the project service per request.
        self._known_defaults: dict[str, str] = {}

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = internal_channel(self._address)
        return self._channel

    def _projects(self) -> project_grpc.ProjectServiceAsyncStub:
        return project_grpc.ProjectServiceStub(self._open())

    async def default_project_id(self, caller: Principal) -> str:
        known = self._known_defaults.get(caller.account_id)
        if known is not None:
            return known
        try:
            reply = await self._projects().GetDefaultProject(
                project_pb.GetDefaultProjectRequest(),
                metadata=as_caller(caller, self._secret),
                timeout=_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as err:
            raise _as_service_error(err, "project") from None
        if len(self._known_defaults) >= KNOWN_DEFAULTS_MAX:
            self._known_defaults.clear()
        self._known_defaults[caller.account_id] = reply.project.project_id
        return reply.project.project_id

    async def authorize(self, caller: Principal, project_id: str, action: int) -> str:
        """The project owner's account id if the caller may do `action`; else the service's
        401/404 error."""
        try:
            reply = await self._projects().AuthorizeProjectAction(
                project_pb.AuthorizeProjectActionRequest(
                    project_id=project_id,
                    action=action,  # type: ignore[arg-type]
                ),
                metadata=as_caller(caller, self._secret),
                timeout=_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:  # a remembered default gone after all
                self._known_defaults = {
                    a: p for a, p in self._known_defaults.items() if p != project_id}
            raise _as_service_error(err, "project") from None
        return reply.project_owner_account_id

    async def authorize_plugin_installation(
        self, caller: Principal, project_id: str, component_id: str, name: str, version: str
    ) -> None:
        """UpdateComponent on the project, and `name@version` registered by the project's owner
        in a scope covering the component; else the project service's 401/404 error."""
        try:
            await plugin_grpc.PluginServiceStub(self._open()).AuthorizeComponentPluginInstallation(
                plugin_pb.AuthorizeComponentPluginInstallationRequest(
                    project_id=project_id, component_id=component_id, name=name, version=version
                ),
                metadata=as_caller(caller, self._secret),
                timeout=_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as err:
            raise _as_service_error(err, "project") from None


class UsageLedger:
    """The account's plan limits (component count, storage, monthly upload), kept by the auth
    service's internal RecordComponentUsage RPC, which checks and records in one step."""

    def __init__(self, auth_address: str, internal_secret: str) -> None:
        self._address = auth_address
        self._secret = internal_secret
        self._channel: grpc.aio.Channel | None = None
        self._stub: auth_grpc.AuthServiceAsyncStub | None = None

    def _auth(self) -> auth_grpc.AuthServiceAsyncStub:
        if self._stub is None:
            self._channel = internal_channel(self._address)
            self._stub = auth_grpc.AuthServiceStub(self._channel)
        return self._stub

    async def record(
        self,
        caller: Principal,
        account_id: str,
        *,
        components: int = 0,
        storage_bytes: int = 0,
        upload_bytes: int = 0,
        operation: str = "",
    ) -> None:
        """Count the usage against `account_id`, once per `operation`; 403 with Golem's message
        over a limit."""
        await self._call(caller, auth_pb.RecordComponentUsageRequest(
            account_id=account_id,
            component_count_delta=components,
            storage_bytes_delta=storage_bytes,
            upload_bytes=upload_bytes,
            operation_id=operation,
        ))

    async def cancel(self, caller: Principal, account_id: str, operation: str) -> None:
        """Give back what `operation` counted (nothing if it counted nothing); safe to repeat."""
        await self._call(caller, auth_pb.RecordComponentUsageRequest(
            account_id=account_id, operation_id=operation, cancel=True))

    async def _call(self, caller: Principal, request: auth_pb.RecordComponentUsageRequest) -> None:
        stub = self._auth()
        assert self._channel is not None
        # Not retried (it changes usage), so it must not fail on a channel still reconnecting
        # to an auth service that has just restarted (docs/faults.md).
        await reconnected(self._channel)
        try:
            await stub.RecordComponentUsage(
                request,
                metadata=as_caller(caller, self._secret),
                timeout=_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise LimitExceeded(err.details() or "Limit exceeded") from None
            raise _as_service_error(err, "auth") from None
