"""Native gRPC through Envoy's port and directly: typed replies, auth, reflection, health."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from cairn.project.v1 import project_service_pb2 as pb
from cairn.project.v1 import project_service_pb2_grpc as pb_grpc
from cairn.runtime.reflection import V1, V1ALPHA
from cairn.runtime.server import CAIRN_SERVICES, HEALTH_SERVICE

from .conftest import RunningStack

pytestmark = pytest.mark.e2e
EXT_AUTHZ = "envoy.service.auth.v3.Authorization"


def test_typed_grpc_through_envoy_and_direct(stack: RunningStack) -> None:
    metadata = (("authorization", f"Bearer {stack.root_token}"),)
    for target in (stack.grpc_target, f"127.0.0.1:{stack.grpc_ports['project']}"):
        with grpc.insecure_channel(target) as channel:
            reply = pb_grpc.ProjectServiceStub(channel).GetDefaultProject(
                pb.GetDefaultProjectRequest(), metadata=metadata
            )
        assert reply.project.name == "default-project"
        assert reply.project.project_type == pb.PROJECT_TYPE_DEFAULT
        assert not reply.rest.data, "native gRPC callers get typed fields, not REST JSON"


def test_grpc_without_token_is_unauthenticated_through_envoy_and_direct(
    stack: RunningStack,
) -> None:
    for target in (stack.grpc_target, f"127.0.0.1:{stack.grpc_ports['project']}"):
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.ProjectServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListProjects(pb.ListProjectsRequest())
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_errors_keep_their_status_through_envoy(stack: RunningStack) -> None:
    with grpc.insecure_channel(stack.grpc_target) as channel, pytest.raises(
        grpc.RpcError
    ) as failed:
            pb_grpc.ProjectServiceStub(channel).GetProject(
                pb.GetProjectRequest(project_id="00000000-0000-0000-0000-0000000000ff"),
                metadata=(("authorization", f"Bearer {stack.root_token}"),),
            )
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND


def _list_services(target: str, version: str) -> set[str]:
    """`grpcurl -plaintext <target> list` over reflection `version` (v1 and v1alpha messages are
    the same on the wire)."""
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            f"/{version}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(call(iter([request]), timeout=30))
    return {s.name for s in reply.list_services_response.service}


def test_each_port_lists_its_services_and_envoy_lists_all_of_them(stack: RunningStack) -> None:
    common = {HEALTH_SERVICE, V1, V1ALPHA}
    served: set[str] = set()
    for version in (V1, V1ALPHA):
        for key, main in CAIRN_SERVICES.items():
            names = _list_services(f"127.0.0.1:{stack.grpc_ports[key]}", version) - common
            package = main.rsplit(".", 1)[0]
            own = {n for n in names if n.startswith(f"{package}.")}
            assert main in own, (key, version)
            # Only ext_authz's server, which Envoy calls itself, is not in the service's package.
            assert names - own == ({EXT_AUTHZ} if key == "auth" else set()), (key, version)
            served |= own
        # Envoy's reflection route asks for the edge's view: every service the edge routes.
        assert _list_services(stack.grpc_target, version) == served | common, version


def test_health_reports_serving_for_all_four_services(stack: RunningStack) -> None:
    for service_key, name in CAIRN_SERVICES.items():
        targets = [stack.grpc_target, f"127.0.0.1:{stack.grpc_ports[service_key]}"]
        for target in targets:
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=name), timeout=5
                )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, (name, target)


def test_service_logs_are_json_lines_carrying_envoys_request_id(stack: RunningStack) -> None:
    import json
    import re
    import time
    import uuid

    import httpx

    marker = f"log-check-{uuid.uuid4()}"
    with httpx.Client(base_url=stack.base_url) as client:
        reply = client.get("/v1/projects", params={"project-name": marker},
                           headers={"Authorization": f"Bearer {stack.root_token}"})
    assert reply.status_code == 200
    request_id = reply.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id)
    finished: dict[str, dict[str, object]] = {}
    for _ in range(50):  # each service writes its log line right after answering
        finished = {
            str(entry["service"]): entry
            for line in (stack.run_dir / "stack.log").read_text(errors="replace").splitlines()
            if request_id in line and line.startswith("{")
            for entry in [json.loads(line)] if entry["event"] == "rpc_finished"
        }
        if {"auth", "project"} <= set(finished):
            break
        time.sleep(0.1)
    # Every service the request touched logs it: ext_authz's check, then the call itself.
    assert finished["auth"]["rpc"] == "/envoy.service.auth.v3.Authorization/Check"
    assert finished["project"]["code"] == "OK"
    assert str(finished["project"]["rpc"]).endswith("/ListProjects")
