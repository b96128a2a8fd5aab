"""The one way a service process starts: settings, logging, Redis, server, signals, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc
import redis.asyncio as aioredis
import structlog

from cairn.runtime import redis as redis_conn
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.logging import configure_logging
from cairn.runtime.server import CAIRN_SERVICES, run_until_signalled, start_server
from cairn.runtime.settings import Settings

Registrar = Callable[[grpc.aio.Server], None]
# Builds the service's servicers from settings and a Redis client; returns what registers them.
Setup = Callable[[Settings, aioredis.Redis], Awaitable[Registrar]]


async def serve(
    service: str,
    settings: Settings,
    setup: Setup,
    *,
    style: ErrorStyle = ErrorStyle.GOLEM,
    extra_services: Sequence[str] = (),
    required: Sequence[str] = ("redis_url", "internal_secret"),
) -> None:
    settings.require(*required)
    redis = redis_conn.connect(settings.redis_url)
    try:
        register = await setup(settings, redis)
        running = await start_server(
            register=register,
            services=[CAIRN_SERVICES[service], *extra_services],
            style=style,
            host=settings.bind_host,
            port=settings.grpc_port(service),
            peers={CAIRN_SERVICES[s]: settings.address(s) for s in CAIRN_SERVICES},
            max_message_bytes=settings.grpc_max_message_bytes,
        )
        structlog.get_logger().info("service_started", port=running.port)
        await run_until_signalled(running, settings.shutdown_grace_seconds)
    finally:
        await redis.aclose()


def run_service(service: str, setup: Setup, **options: object) -> None:
    """Entry point of `python -m cairn.<service>`."""
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format, service=service)
    asyncio.run(serve(service, settings, setup, **options))  # type: ignore[arg-type]
