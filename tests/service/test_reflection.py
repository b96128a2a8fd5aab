"""Server reflection over a real socket: v1 and v1alpha, each port listing only what it serves,
the edge's view (all of Cairn) when Envoy's reflection route asks for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from cairn.project.v1 import project_grant_service_pb2_grpc, project_service_pb2_grpc
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.reflection import EDGE_VIEW, V1, V1ALPHA, VIEW_HEADER
from cairn.runtime.server import HEALTH_SERVICE, cairn_proto_services, start_server

Request = reflection_pb2.ServerReflectionRequest
Response = reflection_pb2.ServerReflectionResponse
DEADLINE = 30.0


async def reflect(target: str, service: str, requests: list[Request],
                  metadata: tuple[tuple[str, str], ...] = ()) -> list[Response]:
    """One reflection stream; v1 and v1alpha messages are the same on the wire."""
    async def sent() -> AsyncIterator[Request]:
        for request in requests:
            yield request

    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )
        return [r async for r in call(sent(), metadata=metadata, timeout=DEADLINE)]


def listed(response: Response) -> list[str]:
    return [s.name for s in response.list_services_response.service]


def _register(server: grpc.aio.Server) -> None:
    project_service_pb2_grpc.add_ProjectServiceServicer_to_server(
        project_service_pb2_grpc.ProjectServiceServicer(), server)
    project_grant_service_pb2_grpc.add_ProjectGrantServiceServicer_to_server(
        project_grant_service_pb2_grpc.ProjectGrantServiceServicer(), server)


async def test_a_port_lists_only_what_it_serves_over_v1_and_v1alpha() -> None:
    running = await start_server(register=_register, services=["cairn.project.v1.ProjectService"],
                                 style=ErrorStyle.GOLEM)
    target = f"127.0.0.1:{running.port}"
    try:
        for version in (V1, V1ALPHA):
            (reply,) = await reflect(target, version, [Request(list_services="")])
            assert listed(reply) == sorted([
                "cairn.project.v1.ProjectGrantService", "cairn.project.v1.ProjectService",
                HEALTH_SERVICE, V1, V1ALPHA,
            ]), version
    finally:
        await running.stop(0)


async def test_the_edge_view_lists_every_cairn_service() -> None:
    running = await start_server(register=_register, services=[], style=ErrorStyle.GOLEM)
    target = f"127.0.0.1:{running.port}"
    try:
        for version in (V1, V1ALPHA):
            (reply,) = await reflect(target, version, [Request(list_services="")],
                                     ((VIEW_HEADER, EDGE_VIEW),))
            assert listed(reply) == sorted([*cairn_proto_services(), HEALTH_SERVICE, V1,
                                            V1ALPHA]), version
    finally:
        await running.stop(0)


async def test_clients_can_describe_services_and_reflection_v1_itself() -> None:
    running = await start_server(register=_register, services=[], style=ErrorStyle.GOLEM)
    target = f"127.0.0.1:{running.port}"
    try:
        replies = await reflect(target, V1, [
            Request(file_containing_symbol="cairn.project.v1.ProjectService"),
            Request(file_containing_symbol=V1),
            Request(file_containing_symbol="cairn.nothing.v1.Nothing"),
        ])
        files = [
            [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in reply.file_descriptor_response.file_descriptor_proto]
            for reply in replies[:2]
        ]
        assert any(f.package == "cairn.project.v1" and
                   "ProjectService" in [s.name for s in f.service] for f in files[0])
        (v1_file,) = files[1]
        assert (v1_file.name, v1_file.package) == ("grpc/reflection/v1/reflection.proto",
                                                   "grpc.reflection.v1")
        (method,) = v1_file.service[0].method
        assert (method.input_type, method.output_type) == (
            ".grpc.reflection.v1.ServerReflectionRequest",
            ".grpc.reflection.v1.ServerReflectionResponse")
        assert replies[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    finally:
        await running.stop(0)
