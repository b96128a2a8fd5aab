"""The gRPC server every service runs: errors, request context, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from grpc_reflection.v1alpha import reflection

from cairn.runtime.errors import ErrorStyle, ServiceError, as_unavailable

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


async def _abort(context: Context, err: ServiceError, style: ErrorStyle) -> None:
    """End the call with the error's status and REST body (always raises AbortError)."""
    await context.abort(
        err.grpc_code,
        err.message,
        trailing_metadata=(
            ("x-http-status", str(err.http_status)),
            ("x-http-body", err.rest_body(style)),
        ),
    )


class RpcInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    """Binds the request id for logs, maps ServiceError to a status and REST body, logs once."""

    def __init__(self, style: ErrorStyle) -> None:
        self._style = style

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None:  # unknown method: let grpc answer UNIMPLEMENTED
            return handler
        method = details.method
        style = self._style

        def begin(context: Context) -> float:
            md = dict(context.invocation_metadata() or ())
            request_id = md.get("x-request-id", "")
            structlog.contextvars.bind_contextvars(rpc=method, request_id=request_id)
            return time.perf_counter()


        # Probes and reflection are frequent and uninteresting; log them only at debug level.
        quiet = method.startswith(("/grpc.health.", "/grpc.reflection."))

        def finish(started: float, code: str) -> None:
            ms = round((time.perf_counter() - started) * 1000, 3)
            (log.debug if quiet else log.info)("rpc_finished", code=code, duration_ms=ms)
            structlog.contextvars.unbind_contextvars("rpc", "request_id")

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def run(request: Any, context: Context) -> Any:
                started, code = begin(context), "OK"
                try:
                    return await behavior(request, context)
                except grpc.aio.AbortError:  # the handler aborted by itself
                    code = "ABORTED_BY_HANDLER"
                    raise
                except Exception as err:
                    failure = _as_service_error(err)
                    code = failure.grpc_code.name
                    await _abort(context, failure, style)
                finally:
                    finish(started, code)

            return run

        def streaming(behavior: Any) -> Callable[..., Any]:
            async def run(request: Any, context: Context) -> AsyncIterator[Any]:
                started, code = begin(context), "OK"
                try:
                    async for item in behavior(request, context):
                        yield item
                except grpc.aio.AbortError:
                    code = "ABORTED_BY_HANDLER"
                    raise
                except Exception as err:
                    failure = _as_service_error(err)
                    code = failure.grpc_code.name
                    await _abort(context, failure, style)
                finally:
                    finish(started, code)

            return run

        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kwargs)


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
            async with grpc.aio.insecure_channel(peer) as channel:
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
) -> RunningServer:
    """Build, bind and start a server; port 0 picks a free port (tests)."""
    server = grpc.aio.server(
        interceptors=[RpcInterceptor(style)],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    register(server)
    health_servicer = FederatedHealth(peers or {})
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *services]:
        await health_servicer.set_local(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*cairn_proto_services(), HEALTH_SERVICE, reflection.SERVICE_NAME], server
    )
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
