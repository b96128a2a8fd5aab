"""Internal channels spread calls over every address of a service (round robin)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cairn.runtime.channels import internal_channel
from cairn.stack.launcher import free_port


class CountingHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, name: str, calls: Counter[str]) -> None:
        self._name, self._calls = name, calls

    async def Check(self, request: Any, context: Any) -> health_pb2.HealthCheckResponse:
        self._calls[self._name] += 1
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def test_calls_are_balanced_over_every_address_of_the_target() -> None:
    calls: Counter[str] = Counter()
    port = free_port()
    servers = []
    for host in ("127.0.0.1", "127.0.0.2"):  # two "pods" behind one name, both loopback
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(CountingHealth(host, calls), server)
        server.add_insecure_port(f"{host}:{port}")
        await server.start()
        servers.append(server)
    try:
        async with internal_channel(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(20):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert calls["127.0.0.1"] >= 5 and calls["127.0.0.2"] >= 5, calls
        async with internal_channel(f"127.0.0.1:{port}") as single:  # a plain host:port
            await health_pb2_grpc.HealthStub(single).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=10)
    finally:
        for server in servers:
            await server.stop(None)
