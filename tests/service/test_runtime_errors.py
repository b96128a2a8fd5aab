"""The server interceptor: every call completes; every failure leaves as status plus REST body
(and, for native gRPC clients, a google.rpc.Status with ErrorInfo); the standard gRPC server
metrics count every call.

Each case runs over a real socket with a client deadline far above the time allowed: a call that
grpc leaves open (the failure mode this guards against) fails the test on time, not on deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from cairn.runtime import errors
from cairn.runtime.errors import ErrorStyle, NotFound, ServiceError, quote, safe_text
from cairn.runtime.server import start_server

DEADLINE = 30.0  # the client's; every case must end long before it
PROMPT = 5.0  # "at once", with room for a loaded machine


def _identity(data: bytes) -> bytes:
    return data


def _refuse_to_encode(message: bytes) -> bytes:
    """What protobuf does with a string field holding a lone surrogate."""
    raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")


def _refuse_to_decode(data: bytes) -> bytes:
    raise DecodeError("String field had bad UTF-8")


async def _ok(request: Any, context: Any) -> bytes:
    return b"ok"


async def _crash(request: bytes, context: Any) -> bytes:
    raise RuntimeError("secret internals")


async def _missing(request: bytes, context: Any) -> bytes:
    raise NotFound("Thing not found: 42")


async def _echo_surrogate(request: bytes, context: Any) -> bytes:
    raise NotFound("Cannot resolve template ID, given: Iou:Iou\ud800")


async def _stream_ok(request: Any, context: Any) -> AsyncIterator[bytes]:
    yield b"first"
    yield b"second"


async def _consume(requests: AsyncIterator[Any], context: Any) -> bytes:
    async for _ in requests:
        pass
    return b"done"


ERROR_CLASSES: list[type[ServiceError]] = [
    errors.InvalidRequest, errors.Unauthenticated, errors.PermissionDenied, errors.LimitExceeded,
    errors.NotFound, errors.AlreadyExists, errors.Conflict, errors.Internal, errors.Unavailable,
]


def _raiser(error: type[ServiceError]) -> Any:
    async def raise_it(request: bytes, context: Any) -> bytes:
        raise error(f"{error.__name__} happened")

    return raise_it


async def _self_aborting(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "by hand")
    raise AssertionError("unreachable")


def _register(server: grpc.aio.Server) -> None:
    unary = grpc.unary_unary_rpc_method_handler
    handlers = {
        "Echo": unary(_ok, _identity, _identity),
        "SelfAborting": unary(_self_aborting, _identity, _identity),
        **{cls.__name__: unary(_raiser(cls), _identity, _identity) for cls in ERROR_CLASSES},
        "Crash": unary(_crash, _identity, _identity),
        "Missing": unary(_missing, _identity, _identity),
        "Unencodable": unary(_ok, _identity, _refuse_to_encode),
        "Undecodable": unary(_ok, _refuse_to_decode, _identity),
        "Surrogate": unary(_echo_surrogate, _identity, _identity),
        "StreamOk": grpc.unary_stream_rpc_method_handler(_stream_ok, _identity, _identity),
        "StreamUnencodable": grpc.unary_stream_rpc_method_handler(
            _stream_ok, _identity, _refuse_to_encode
        ),
        "UploadUndecodable": grpc.stream_unary_rpc_method_handler(
            _consume, _refuse_to_decode, _identity
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Svc", handlers),))


INTERNAL = (grpc.StatusCode.INTERNAL, "500", {"error": "Internal server error"})
DECODE_ERROR = "Invalid request: a field holds a value of the wrong type, or text that is not UTF-8"


@pytest.mark.parametrize(
    ("style", "method", "expected"),
    [
        (ErrorStyle.GOLEM, "Crash", INTERNAL),
        (ErrorStyle.GOLEM, "Missing",
         (grpc.StatusCode.NOT_FOUND, "404", {"error": "Thing not found: 42"})),
        (ErrorStyle.LEDGER, "Missing",
         (grpc.StatusCode.NOT_FOUND, "404", {"status": 404, "errors": ["Thing not found: 42"]})),
        # The response cannot be serialized: 500 in the family's shape, not grpc's UNKNOWN text.
        (ErrorStyle.GOLEM, "Unencodable", INTERNAL),
        (ErrorStyle.LEDGER, "Unencodable",
         (grpc.StatusCode.INTERNAL, "500", {"status": 500, "errors": ["Internal server error"]})),
        (ErrorStyle.GOLEM, "StreamUnencodable", INTERNAL),
        # The request cannot be decoded: the client's fault, 400.
        (ErrorStyle.GOLEM, "Undecodable",
         (grpc.StatusCode.INVALID_ARGUMENT, "400",
          {"errors": [DECODE_ERROR]})),
        (ErrorStyle.LEDGER, "UploadUndecodable",
         (grpc.StatusCode.INVALID_ARGUMENT, "400",
          {"status": 400, "errors": [DECODE_ERROR]})),
        # A message echoing a lone surrogate: grpc could not send it as grpc-message and would
        # leave the call open; it is replaced, and the call ends.
        (ErrorStyle.LEDGER, "Surrogate",
         (grpc.StatusCode.NOT_FOUND, "404",
          {"status": 404, "errors": ["Cannot resolve template ID, given: Iou:Iou\ufffd"]})),
    ],
)
async def test_every_failure_ends_the_call_with_status_and_rest_body(
    style: ErrorStyle, method: str, expected: tuple[grpc.StatusCode, str, dict[str, Any]]
) -> None:
    code, status, body = expected
    running = await start_server(register=_register, services=[], style=style)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                if method.startswith("Stream"):
                    call = channel.unary_stream(f"/test.Svc/{method}")
                    async for _ in call(b"", timeout=DEADLINE):
                        pass
                elif method.startswith("Upload"):
                    upload = channel.stream_unary(f"/test.Svc/{method}")
                    await upload(iter([b"a", b"b"]), timeout=DEADLINE)
                else:
                    await channel.unary_unary(f"/test.Svc/{method}")(b"", timeout=DEADLINE)
            elapsed = time.monotonic() - started
    finally:
        await running.stop(0)
    assert elapsed < PROMPT
    assert failed.value.code() == code
    details = failed.value.details() or ""
    assert "secret internals" not in details and "Unexpected" not in details
    trailers = dict(failed.value.trailing_metadata() or ())
    assert trailers["x-http-status"] == status
    assert json.loads(trailers["x-http-body"]) == body


async def test_successful_calls_still_pass_their_messages() -> None:
    """(De)serialization moved into the interceptor: real messages and streams still work."""
    running = await start_server(register=_register, services=[], style=ErrorStyle.GOLEM)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE
            )
            stream = channel.unary_stream("/test.Svc/StreamOk")(b"", timeout=DEADLINE)
            items = [item async for item in stream]
    finally:
        await running.stop(0)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert items == [b"first", b"second"]


def test_messages_are_bounded_and_carry_only_scalar_values() -> None:
    assert safe_text("a\ud800b") == "a\ufffdb"
    assert len(safe_text("x" * 64_000)) == 1003
    assert quote("é" * 100) == "é" * 64 + "..."
    assert quote(b"\x00") == "b'\\x00'"
    assert NotFound("y" * 64_000).message.endswith("...")


@pytest.mark.parametrize("error", ERROR_CLASSES, ids=lambda cls: cls.__name__)
async def test_native_clients_get_error_info_with_a_stable_reason(
    error: type[ServiceError],
) -> None:
    running = await start_server(register=_register, services=[], style=ErrorStyle.GOLEM,
                                 domain="cairn.test")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = channel.unary_unary(f"/test.Svc/{error.__name__}")
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(b"", metadata=(("x-request-id", "rid-7"),))
    finally:
        await running.stop(0)
    status = rpc_status.from_call(failed.value)
    assert status is not None and status.code == error.grpc_code.value[0]
    assert status.message == f"{error.__name__} happened"
    info, request = error_details_pb2.ErrorInfo(), error_details_pb2.RequestInfo()
    assert status.details[0].Unpack(info) and status.details[-1].Unpack(request)
    assert (info.reason, info.domain) == (error.reason, "cairn.test")
    assert request.request_id == "rid-7"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_calls_are_counted_in_the_standard_grpc_server_metrics() -> None:
    labels = {"grpc_type": "unary", "grpc_service": "test.Svc"}
    before = {
        (method, code): _sample("grpc_server_handled_total", **labels, grpc_method=method,
                                grpc_code=code)
        for method, code in [("Echo", "OK"), ("Missing", "NOT_FOUND"), ("Crash", "INTERNAL"),
                             ("SelfAborting", "FAILED_PRECONDITION")]
    }
    started = _sample("grpc_server_started_total", **labels, grpc_method="Echo")
    timed = _sample("grpc_server_handling_seconds_count", **labels, grpc_method="Echo")
    running = await start_server(register=_register, services=[], style=ErrorStyle.GOLEM)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            for _ in range(3):
                assert await channel.unary_unary("/test.Svc/Echo")(b"x") == b"ok"
            for method in ("Missing", "Crash", "SelfAborting"):
                with pytest.raises(grpc.aio.AioRpcError):
                    await channel.unary_unary(f"/test.Svc/{method}")(b"")
    finally:
        await running.stop(0)
    deltas = {
        key: _sample("grpc_server_handled_total", **labels, grpc_method=key[0],
                     grpc_code=key[1]) - value
        for key, value in before.items()
    }
    assert deltas == {("Echo", "OK"): 3, ("Missing", "NOT_FOUND"): 1, ("Crash", "INTERNAL"): 1,
                      ("SelfAborting", "FAILED_PRECONDITION"): 1}
    assert _sample("grpc_server_started_total", **labels, grpc_method="Echo") - started == 3
    assert _sample("grpc_server_handling_seconds_count", **labels, grpc_method="Echo") - timed == 3
    assert _sample("grpc_server_in_flight", **labels, grpc_method="Echo") == 0
