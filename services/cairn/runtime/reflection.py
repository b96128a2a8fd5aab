"""gRPC server reflection, v1 and v1alpha: each port describes what it serves, the edge everything.

grpcio-reflection implements only `grpc.reflection.v1alpha` (grpc/grpc#38576); `grpc.reflection.v1`
is the same protocol under another package, with identical messages and field numbers, so the
v1alpha servicer answers both, and the v1 file descriptor, derived from v1alpha's by renaming the
package, is added to the descriptor pool so that clients can describe it too.

A service port lists only the services registered on it. Through Envoy, one port answers for all
of Cairn: Envoy's reflection route adds `x-cairn-reflection-view: edge`, and a call carrying it is
answered with the edge's view (every Cairn service, health, reflection), so `grpcurl <envoy> list`
shows what the edge routes. The header unlocks nothing but descriptors the edge publishes anyway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

# What `reflection.aio.ReflectionServicer` names (the stubs do not know `aio`).
from grpc_reflection.v1alpha._async import ReflectionServicer as AsyncReflectionServicer

V1ALPHA = reflection.SERVICE_NAME
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_PACKAGE = "grpc.reflection.v1"
V1 = f"{V1_PACKAGE}.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
VIEW_HEADER = "x-cairn-reflection-view"
EDGE_VIEW = "edge"


def _add_v1_descriptor() -> None:
    """Put grpc/reflection/v1/reflection.proto in the default pool (once), made from v1alpha's."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", f".{V1_PACKAGE}."
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    proto.ClearField("options")  # v1alpha's language packages
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())


class ScopedReflection(AsyncReflectionServicer):  # type: ignore[misc]
    """Reflection listing `local`, or `edge` for calls that Envoy's reflection route marks."""

    def __init__(self, local: Iterable[str], edge: Iterable[str]) -> None:
        super().__init__(local)
        self._edge = AsyncReflectionServicer(edge)

    def ServerReflectionInfo(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get(VIEW_HEADER) == EDGE_VIEW:
            return self._edge.ServerReflectionInfo(requests, context)  # type: ignore[no-any-return]
        return super().ServerReflectionInfo(requests, context)  # type: ignore[no-any-return]


def enable_reflection(server: grpc.aio.Server, local: Iterable[str], edge: Iterable[str]) -> None:
    """Serve reflection v1 and v1alpha on `server`; both list `local` plus themselves."""
    _add_v1_descriptor()
    servicer = ScopedReflection([*local, *SERVICE_NAMES], [*edge, *SERVICE_NAMES])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1, {"ServerReflectionInfo": info}),)
    )
