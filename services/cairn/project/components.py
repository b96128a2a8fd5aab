"""The project service's view of components: asked of the component service on the caller's behalf.

Only the plugin registry needs it, to list the plugins usable in a component's scope (Golem adds
the plugins of the component's project to those of the component).
"""

from __future__ import annotations

import grpc

from cairn.component.v1 import component_service_pb2, component_service_pb2_grpc
from cairn.runtime.callers import as_caller
from cairn.runtime.channels import internal_channel
from cairn.runtime.errors import Unavailable
from cairn.runtime.principal import Principal

_HIDDEN = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
)


class ComponentServiceDirectory:
    """ComponentDirectory over gRPC; one channel per process, opened on first use."""

    def __init__(self, component_address: str, internal_secret: str) -> None:
        self._address = component_address
        self._secret = internal_secret
        self._stub: component_service_pb2_grpc.ComponentServiceAsyncStub | None = None

    def _components(self) -> component_service_pb2_grpc.ComponentServiceAsyncStub:
        if self._stub is None:
            channel = internal_channel(self._address)
            self._stub = component_service_pb2_grpc.ComponentServiceStub(channel)
        return self._stub

    async def project_of(self, caller: Principal, component_id: str) -> str | None:
        try:
            reply = await self._components().GetLatestComponent(
                component_service_pb2.GetLatestComponentRequest(component_id=component_id),
                metadata=as_caller(caller, self._secret),
                timeout=5,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() in _HIDDEN:
                return None
            raise Unavailable("The component service is unavailable") from None
        return reply.component.project_id
