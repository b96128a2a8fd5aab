"""The gRPC floor: a bare grpc.aio unary echo, no interceptor, no logging, no protobuf parsing.

`python -m tests.bench.harness.echo PORT` serves `/bench.Echo/Echo`, which returns the request's
bytes, on the services' default event loop (uvloop). Reached through Envoy it is the cheapest call
a Python gRPC service behind Envoy can answer.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
import uvloop

METHOD = "/bench.Echo/Echo"


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)  # bytes in, bytes out
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
