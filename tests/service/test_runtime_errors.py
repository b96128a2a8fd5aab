"""The server interceptor: every failure leaves as a status plus the exact REST body."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from cairn.runtime.errors import ErrorStyle, NotFound
from cairn.runtime.server import start_server


def _identity(data: bytes) -> bytes:
    return data


async def _crash(request: bytes, context: Any) -> bytes:
    raise RuntimeError("secret internals")


async def _missing(request: bytes, context: Any) -> bytes:
    raise NotFound("Thing not found: 42")


def _register(server: grpc.aio.Server) -> None:
    handlers = {
        "Crash": grpc.unary_unary_rpc_method_handler(_crash, _identity, _identity),
        "Missing": grpc.unary_unary_rpc_method_handler(_missing, _identity, _identity),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", handlers),))


@pytest.mark.parametrize(
    ("style", "method", "code", "status", "body"),
    [
        (ErrorStyle.GOLEM, "Crash", grpc.StatusCode.INTERNAL, "500",
         {"error": "Internal server error"}),
        (ErrorStyle.GOLEM, "Missing", grpc.StatusCode.NOT_FOUND, "404",
         {"error": "Thing not found: 42"}),
        (ErrorStyle.LEDGER, "Missing", grpc.StatusCode.NOT_FOUND, "404",
         {"status": 404, "errors": ["Thing not found: 42"]}),
    ],
)
async def test_failures_map_to_status_and_rest_body(
    style: ErrorStyle, method: str, code: grpc.StatusCode, status: str, body: dict[str, Any]
) -> None:
    running = await start_server(register=_register, services=[], style=style)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = channel.unary_unary(f"/test.Svc/{method}")
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(b"")
    finally:
        await running.stop(0)
    assert failed.value.code() == code
    assert "secret internals" not in (failed.value.details() or "")
    trailers = dict(failed.value.trailing_metadata() or ())
    assert trailers["x-http-status"] == status
    assert json.loads(trailers["x-http-body"]) == body
