"""The gRPC server every service runs: errors, request context, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from grpc_status import rpc_status

from cairn.runtime.channels import internal_channel
from cairn.runtime.errors import (
    ErrorStyle,
    InvalidRequest,
    ServiceError,
    as_unavailable,
    safe_text,
)
from cairn.runtime.metrics import MethodMetrics, RpcMetrics, rpc_type
from cairn.runtime.reflection import enable_reflection
from cairn.runtime.tracing import ServerSpan, tracer

log = structlog.get_logger()

Context = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

# Service names the health endpoints know about, including services without RPCs yet.
CAIRN_SERVICES = {
    "project": "cairn.project.v1.ProjectService",
    "component": "cairn.component.v1.ComponentService",
    "auth": "cairn.auth.v1.AuthService",
    "ledger": "cairn.ledger.v1.LedgerService",
}


def cairn_proto_services() -> list[str]:
    """Full names of every service in the generated Cairn protos (imports them all)."""
    import cairn

    names: list[str] = []
    for mod in pkgutil.walk_packages(cairn.__path__, "cairn."):
        if mod.name.endswith("_pb2") and ".v1." in mod.name:
            module = importlib.import_module(mod.name)
            names.extend(s.full_name for s in module.DESCRIPTOR.services_by_name.values())
    return sorted(names)


def _as_service_error(err: Exception) -> ServiceError:
    """What a failed call answers: the ServiceError, UNAVAILABLE for a dependency outage
    (Redis, blob store, a peer service), else INTERNAL (logged with its traceback)."""
    if isinstance(err, ServiceError):
        return err
    unavailable = as_unavailable(err)
    if unavailable is not None:
        log.warning("dependency_unavailable", error=f"{type(err).__name__}: {err}")
        return unavailable
    log.exception("rpc_crashed")
    return ServiceError("Internal server error")


def _passthrough(data: bytes) -> bytes:
    """grpc's (de)serializer for the wrapped handlers: the interceptor converts messages itself."""
    return data


class UndecodableRequest(InvalidRequest):
    """The request bytes are not a valid message of the method's type (e.g. a string field that
    is not UTF-8, as Envoy's transcoder makes from a lone surrogate escape in JSON)."""

    def __init__(self) -> None:
        super().__init__(
            "Invalid request: a field holds a value of the wrong type, or text that is not UTF-8"
        )


def _decoder(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    if deserialize is None:
        return _passthrough

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # DecodeError, or whatever a custom deserializer raises on bad bytes
            raise UndecodableRequest() from None

    return decode


def _aborted_code(context: Context) -> str:
    """The status a handler that aborted by itself set."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _abort_arguments(
    err: ServiceError, style: ErrorStyle, domain: str, request_id: str
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
    """Code, message and trailers of a failed call: the google.rpc.Status native gRPC clients
    read (grpc-status-details-bin, from grpcio-status), and the REST status and body for Envoy's
    Lua shaper."""
    status = rpc_status.to_status(err.rpc_status(domain, request_id))
    return status.code, safe_text(status.details), (
        *status.trailing_metadata,
        ("x-http-status", str(err.http_status)),
        ("x-http-body", err.rest_body(style)),
    )


async def _abort(context: Context, err: ServiceError, style: ErrorStyle, domain: str) -> None:
    """End the call with the error's status, details and REST body; always raises AbortError.

    grpc sends `details` as the grpc-message header: text it cannot encode (a lone surrogate
    echoed from the request) would fail inside abort and leave the call open until the client's
    deadline, so the message is made safe first, and a failure here still ends the call.
    """
    request_id = str(dict(context.invocation_metadata() or ()).get("x-request-id", ""))
    try:
        await context.abort(*_abort_arguments(err, style, domain, request_id))
    except grpc.aio.AbortError:
        raise
    except Exception:
        log.exception("rpc_abort_failed")
        await context.abort(*_abort_arguments(ServiceError(), style, domain, request_id))


class _CallContext:
    """The servicer's view of its call's context, with the invocation metadata read once.

    grpc.aio rebuilds the metadata tuple from gRPC core on every `invocation_metadata()` (~7 µs
    for the dozen headers Envoy sends), and one call asks for it several times (request id,
    caller, REST marker); everything else is the call's own context.
    """

    __slots__ = ("_context", "_metadata")

    def __init__(self, context: Context, metadata: Any) -> None:
        self._context = context
        self._metadata = metadata

    def invocation_metadata(self) -> Any:
        return self._metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class RpcInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    """Every call completes: the request id is bound for logs, a failure anywhere becomes a status,
    and the standard gRPC server metrics count it.

    The wrapped handler decodes the request and encodes the response itself, inside the same
    `try` as the servicer, and hands grpc pass-through (de)serializers: an exception raised while
    decoding (400) or encoding (500) a message then ends the call with the API family's error
    like any other, instead of escaping into grpc, which would answer UNKNOWN with the
    exception's text. Failures map through `_as_service_error`; each call is logged once.
    """

    def __init__(
        self, style: ErrorStyle, metrics: RpcMetrics | None = None, domain: str = "cairn"
    ) -> None:
        self._style = style
        self._metrics = metrics
        self._domain = domain  # ErrorInfo.domain of every error this server sends
        # method path -> (the servicer's handler, its wrapper): grpc asks for the handler on
        # every call, and building the wrapper's closures each time cost ~3 µs per call.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None:  # unknown method: let grpc answer UNIMPLEMENTED
            return handler
        method = details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        style, domain = self._style, self._domain
        decode = _decoder(handler.request_deserializer)
        encode = handler.response_serializer or _passthrough
        meter: MethodMetrics | None = (
            self._metrics.method(method, rpc_type(handler)) if self._metrics else None
        )

        def begin(context: Context) -> tuple[float, ServerSpan | None, Context]:
            metadata = context.invocation_metadata() or ()
            md = dict(metadata)
            request_id = md.get("x-request-id", "")
            structlog.contextvars.bind_contextvars(rpc=method, request_id=request_id)
            if meter is not None:
                meter.started.inc()
                meter.in_flight.inc()
            active = tracer()
            span = None if active is None else ServerSpan(active, method, md)
            return time.perf_counter(), span, cast(Context, _CallContext(context, metadata))

        # Probes and reflection are frequent and uninteresting; log them only at debug level.
        quiet = method.startswith(("/grpc.health.", "/grpc.reflection."))

        def finish(started: float, span: ServerSpan | None, code: str) -> None:
            seconds = time.perf_counter() - started
            if meter is not None:
                meter.in_flight.dec()
                meter.handled(code).inc()
                meter.seconds.observe(seconds)
            if span is not None:
                span.end(code)
            (log.debug if quiet else log.info)(
                "rpc_finished", code=code, duration_ms=round(seconds * 1000, 3)
            )
            structlog.contextvars.unbind_contextvars("rpc", "request_id")

        async def decoded(requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
            async for data in requests:
                yield decode(data)

        def unary_request(request: bytes) -> Any:
            return decode(request)

        def stream_request(requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
            return decoded(requests)

        def unary(
            behavior: Callable[..., Awaitable[Any]], parse: Callable[[Any], Any]
        ) -> Callable[..., Awaitable[bytes]]:
            async def run(request: Any, context: Context) -> bytes:
                started, span, code = time.perf_counter(), None, "OK"
                try:
                    started, span, call = begin(context)
                    return bytes(encode(await behavior(parse(request), call)))
                except grpc.aio.AbortError:  # the handler aborted by itself
                    code = _aborted_code(context)
                    raise
                except Exception as err:
                    failure = _as_service_error(err)
                    code = failure.grpc_code.name
                    await _abort(context, failure, style, domain)
                    raise  # unreachable: _abort raises AbortError
                finally:
                    finish(started, span, code)

            return run

        def streaming(behavior: Any, parse: Callable[[Any], Any]) -> Callable[..., Any]:
            async def run(request: Any, context: Context) -> AsyncIterator[bytes]:
                started, span, code = time.perf_counter(), None, "OK"
                try:
                    started, span, call = begin(context)
                    async for item in behavior(parse(request), call):
                        yield bytes(encode(item))
                except grpc.aio.AbortError:
                    code = _aborted_code(context)
                    raise
                except Exception as err:
                    failure = _as_service_error(err)
                    code = failure.grpc_code.name
                    await _abort(context, failure, style, domain)
                finally:
                    finish(started, span, code)

            return run

        kwargs = {"request_deserializer": _passthrough, "response_serializer": _passthrough}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary(handler.unary_unary, unary_request), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                unary(handler.stream_unary, stream_request), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream, unary_request), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            streaming(handler.stream_stream, stream_request), **kwargs
        )


class FederatedHealth(AsyncHealthServicer):  # type: ignore[misc]
    """Health for this process's services, forwarding checks for the other Cairn services.

    Envoy routes `grpc.health.v1.Health` to one service; forwarding lets a client behind Envoy ask
    about any of the four.
    """

    def __init__(self, peers: Mapping[str, str]) -> None:
        super().__init__()
        self._peers = dict(peers)
        self._local: set[str] = set()

    async def set_local(self, service: str, status: Any) -> None:
        self._local.add(service)
        await self.set(service, status)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        peer = self._peers.get(request.service)
        if peer is None or request.service in self._local:
            return await super().Check(request, context)
        try:
            async with internal_channel(peer) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                return await stub.Check(request, timeout=2)
        except grpc.aio.AioRpcError:
            return health_pb2.HealthCheckResponse(
                status=health_pb2.HealthCheckResponse.NOT_SERVING
            )


# A readiness probe: returns when its dependency answers, raises when it does not.
Probe = Callable[[], Awaitable[object]]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    """Keeps a process's services NOT_SERVING while a dependency (Redis, the blob store) is down.

    Each named service's health is its readiness: Kubernetes' readiness probe and the launcher
    ask for it, and Envoy's health route forwards to it. The overall service `""` is liveness:
    it stays SERVING through an outage (a restart would not bring Redis back) and turns
    NOT_SERVING only when the process drains on SIGTERM.
    """

    def __init__(
        self,
        health: FederatedHealth,
        services: Iterable[str],
        probes: Mapping[str, Probe],
        *,
        interval: float = 1.0,
        timeout: float = 2.0,
    ) -> None:
        self._health = health
        self._services = [s for s in services if s]
        self._probes = dict(probes)
        self._interval = interval
        self._timeout = timeout
        self.down: frozenset[str] = frozenset()

    async def _error(self, probe: Probe) -> str | None:
        try:
            await asyncio.wait_for(probe(), self._timeout)
        except Exception as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        return None

    async def check(self) -> bool:
        """Probe every dependency once and publish the result; True when all answered."""
        errors = await asyncio.gather(*(self._error(p) for p in self._probes.values()))
        failures = {n: e for n, e in zip(self._probes, errors, strict=True) if e is not None}
        down = frozenset(failures)
        if down != self.down:
            if down:
                log.warning("dependency_down", errors=failures)
            else:
                log.info("dependencies_restored", dependencies=sorted(self.down))
            self.down = down
            for service in self._services:
                await self._health.set(service, NOT_SERVING if down else SERVING)
        return not down

    async def run(self) -> None:
        """Check every `interval` seconds until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self._interval)


class _Registry:
    """The server as a `register` callback sees it, noting the name of each service added
    (generated `add_*Servicer_to_server` functions add one generic handler per service)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.services: list[str] = []

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        for handler in handlers:
            name = getattr(handler, "service_name", None)
            if callable(name):
                self.services.append(str(name()))
        self._server.add_generic_rpc_handlers(handlers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: FederatedHealth

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(
    *,
    register: Callable[[grpc.aio.Server], None],
    services: Iterable[str],
    style: ErrorStyle,
    host: str = "127.0.0.1",
    port: int = 0,
    peers: Mapping[str, str] | None = None,
    max_message_bytes: int = 64 << 20,
    metrics: bool = True,
    domain: str = "cairn",
) -> RunningServer:
    """Build, bind and start a server; port 0 picks a free port (tests)."""
    server = grpc.aio.server(
        interceptors=[RpcInterceptor(style, RpcMetrics() if metrics else None, domain)],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    registry = _Registry(server)
    register(cast(grpc.aio.Server, registry))
    health_servicer = FederatedHealth(peers or {})
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *services]:
        await health_servicer.set_local(name, health_pb2.HealthCheckResponse.SERVING)
    # This port lists what it serves; Envoy's route asks for the edge's view (all of Cairn).
    enable_reflection(server, [*registry.services, HEALTH_SERVICE],
                      [*cairn_proto_services(), HEALTH_SERVICE])
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return RunningServer(server, bound, health_servicer)


async def run_until_signalled(running: RunningServer, grace: float) -> None:
    """Serve until SIGTERM/SIGINT, then report NOT_SERVING and drain in-flight calls."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("service_stopping", grace_seconds=grace)
    await running.stop(grace)
    log.info("service_stopped")
