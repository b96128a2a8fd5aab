"""The one way a service process starts: settings, logging, Redis, server, signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis.asyncio as aioredis
import structlog
import uvloop

from cairn.runtime import redis as redis_conn
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.logging import configure_logging
from cairn.runtime.metrics import serve_metrics, set_recording
from cairn.runtime.server import (
    CAIRN_SERVICES,
    Probe,
    Readiness,
    run_until_signalled,
    start_server,
)
from cairn.runtime.settings import Settings
from cairn.runtime.tracing import configure_tracing

Registrar = Callable[[grpc.aio.Server], None]


@dataclass(frozen=True)
class Wiring:
    """What a setup returns when the service depends on more than Redis (e.g. a blob store)."""

    register: Registrar
    # Readiness probes besides Redis's, by dependency name.
    probes: Mapping[str, Probe] = field(default_factory=dict)
    # Work that runs beside the server while it serves, cancelled when it stops.
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()


# Builds the service's servicers from settings and a Redis client; returns what registers them.
Setup = Callable[[Settings, aioredis.Redis], Awaitable[Registrar | Wiring]]


async def serve(
    service: str,
    settings: Settings,
    setup: Setup,
    *,
    style: ErrorStyle = ErrorStyle.GOLEM,
    extra_services: Sequence[str] = (),
    required: Sequence[str] = ("redis", "internal_secret"),
) -> None:
    settings.require(*required)
    set_recording(settings.metrics_enabled)
    stop_tracing = None
    if settings.otlp_endpoint:
        stop_tracing = configure_tracing(service, settings.otlp_endpoint,
                                         settings.trace_sample_ratio)
    metrics_server = None
    if settings.metrics_enabled:
        metrics_server = serve_metrics(settings.bind_host, settings.metrics_port(service))
    redis = redis_conn.connect(settings.redis, timeout_seconds=settings.redis_timeout_seconds)
    try:
        wiring = await setup(settings, redis)
        if not isinstance(wiring, Wiring):
            wiring = Wiring(wiring)
        services = [CAIRN_SERVICES[service], *extra_services]
        running = await start_server(
            register=wiring.register,
            services=services,
            style=style,
            host=settings.bind_host,
            port=settings.grpc_port(service),
            peers={CAIRN_SERVICES[s]: settings.address(s) for s in CAIRN_SERVICES},
            max_message_bytes=settings.grpc_max_message_bytes,
            metrics=settings.metrics_enabled,
            domain=f"cairn.{service}",
        )
        structlog.get_logger().info(
            "service_started", port=running.port,
            metrics_port=settings.metrics_port(service) if metrics_server else None,
        )
        readiness = Readiness(
            running.health, services, {"redis": redis.ping, **wiring.probes},
            interval=settings.readiness_interval_seconds,
        )
        tasks = [asyncio.create_task(readiness.run()),
                 *(asyncio.create_task(work()) for work in wiring.background)]
        try:
            await run_until_signalled(running, settings.shutdown_grace_seconds)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await redis.aclose()
        if metrics_server is not None:
            metrics_server.shutdown()
        if stop_tracing is not None:
            stop_tracing()  # exports the spans still batched


def run(main: Coroutine[Any, Any, None], settings: Settings) -> None:
    """Run a process's main coroutine on the configured event loop (CAIRN_EVENT_LOOP)."""
    if settings.event_loop == "uvloop":
        uvloop.run(main)
    else:
        asyncio.run(main)


def run_service(service: str, setup: Setup, **options: object) -> None:
    """Entry point of `python -m cairn.<service>`."""
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format, service=service)
    run(serve(service, settings, setup, **options), settings)  # type: ignore[arg-type]
