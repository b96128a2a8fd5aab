"""Dependency outages: Redis down, loading or dropping connections, against real Redis processes.

The Redis client policy (cairn.runtime.redis), the interceptor's UNAVAILABLE mapping and the
readiness health are each checked over real sockets; a small TCP proxy in front of a real Redis
injects the faults a restart causes (a dropped connection, -LOADING replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError

from cairn.runtime import redis as redis_conn
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.server import Readiness, start_server
from tests.conftest import RedisProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FaultProxy:
    """Forwards TCP to a real Redis; `drop_next` closes the next connection after its first
    command (before Redis sees it), `loading` answers that many commands with -LOADING."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop_next = False
        self.loading = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        pump = asyncio.create_task(downstream())
        try:
            while data := await reader.read(65536):
                # The handshake (HELLO / CLIENT SETINFO) passes; faults hit the commands after it.
                handshake = b"HELLO" in data or b"CLIENT" in data
                if self.drop_next and not handshake:
                    self.drop_next = False
                    return
                if self.loading and not handshake:
                    self.loading -= 1
                    writer.write(b"-LOADING Redis is loading the dataset in memory\r\n")
                    await writer.drain()
                    continue
                up_writer.write(data)
                await up_writer.drain()
        finally:
            pump.cancel()
            up_writer.close()
            writer.close()


@pytest.fixture
async def client(redis_process: RedisProcess) -> AsyncIterator[redis_conn.Redis]:
    redis = redis_conn.connect(redis_process.url, timeout_seconds=2)
    yield redis
    await redis.aclose()


async def test_a_read_on_a_dropped_connection_is_retried_once(redis_process: RedisProcess) -> None:
    async with FaultProxy(redis_process.port) as proxy:
        redis = redis_conn.connect(f"redis://127.0.0.1:{proxy.port}/0", timeout_seconds=2)
        try:
            await redis.set("k", b"v")
            proxy.drop_next = True
            assert await redis.get("k") == b"v"
            proxy.drop_next = True
            # A write may have run before the drop: it is not repeated, the caller hears of it.
            with pytest.raises(ConnectionError):
                await redis.incr("counter")
            assert await redis.get("counter") is None
        finally:
            await redis.aclose()


class ClosedTransportOnce:
    """Makes the next command's write fail as uvloop fails it when the peer reset the connection
    a moment before (the stdlib loop raises an OSError there, which redis-py maps itself)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        original = Connection.send_packed_command

        async def send(connection: Connection, command: Any, check_health: bool = True) -> None:
            if self.armed:
                self.armed = False
                await connection.disconnect(nowait=True)
                raise RuntimeError("unable to perform operation on <TCPTransport closed=True "
                                   "reading=False 0x56114a983e30>; the handler is closed")
            await original(connection, command, check_health)

        monkeypatch.setattr(Connection, "send_packed_command", send)


async def test_uvloops_closed_transport_is_a_dropped_connection(
    client: redis_conn.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen in `make faults`: a query during a Redis kill answered 500 with this RuntimeError.
    closed = ClosedTransportOnce(monkeypatch)
    await client.set("k", b"v")
    closed.armed = True
    assert await client.get("k") == b"v"  # a read is retried once, like any dropped connection
    closed.armed = True
    with pytest.raises(ConnectionError):  # a write is not repeated: UNAVAILABLE, not INTERNAL
        await client.incr("counter")
    closed.armed = True
    with pytest.raises(ConnectionError):
        await client.pipeline().incr("counter").execute()
    assert await client.get("counter") is None
    closed.armed = True
    with pytest.raises(RuntimeError) as raw:  # a client outside the wrapper: still an outage
        await client.pubsub().subscribe("channel")
    assert redis_conn.is_unavailable(raw.value)
    assert not redis_conn.is_unavailable(RuntimeError("a bug"))


async def test_loading_replies_are_retried_with_backoff(redis_process: RedisProcess) -> None:
    async with FaultProxy(redis_process.port) as proxy:
        redis = redis_conn.connect(f"redis://127.0.0.1:{proxy.port}/0", timeout_seconds=2)
        try:
            await redis.ping()
            proxy.loading = 3
            # Writes too: a -LOADING reply means the command did not run.
            assert await redis.set("k", b"v") is True
            assert proxy.loading == 0
        finally:
            await redis.aclose()


async def test_an_unreachable_redis_fails_fast_and_pools_reconnect(
    redis_process: RedisProcess, client: redis_conn.Redis
) -> None:
    await client.set("k", b"v")
    redis_process.kill()
    started = time.monotonic()
    with pytest.raises(ConnectionError) as failed:
        await client.get("k")
    assert redis_conn.is_unavailable(failed.value)
    assert time.monotonic() - started < 1.0, "no waiting through an outage"
    redis_process.start()
    # The pooled connection died with the old process; the pool notices before it sends
    # anything and reconnects: even a write (never retried) succeeds at once.
    assert await client.incr("n") == 1
    assert await client.get("k") == b"v"


def _register_redis_handler(redis: redis_conn.Redis) -> Callable[[grpc.aio.Server], None]:
    async def read(request: bytes, context: Any) -> bytes:
        return await redis.get("k") or b""

    def register(server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(read, lambda b: b, lambda b: b)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Svc", {"Read": handler}),)
        )

    return register


@pytest.mark.parametrize(
    ("style", "body"),
    [
        (ErrorStyle.GOLEM,
         {"error": "The state store (Redis) is unavailable; try again shortly"}),
        (ErrorStyle.LEDGER,
         {"status": 503, "errors": ["The state store (Redis) is unavailable; try again shortly"]}),
    ],
)
async def test_a_redis_outage_is_unavailable_with_the_family_body(
    redis_process: RedisProcess, client: redis_conn.Redis, style: ErrorStyle,
    body: dict[str, Any],
) -> None:
    running = await start_server(register=_register_redis_handler(client), services=[],
                                 style=style)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            read = channel.unary_unary("/test.Svc/Read")
            await read(b"")
            redis_process.kill()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await read(b"")
            redis_process.start()
            assert await read(b"") == b""
    finally:
        await running.stop(0)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(failed.value.trailing_metadata() or ())
    assert trailers["x-http-status"] == "503"
    assert json.loads(trailers["x-http-body"]) == body


async def _status(stub: health_pb2_grpc.HealthStub, service: str) -> Any:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


async def test_readiness_follows_redis_and_liveness_stays_up(
    redis_process: RedisProcess, client: redis_conn.Redis
) -> None:
    name = "test.Svc"
    running = await start_server(register=lambda server: None, services=[name],
                                 style=ErrorStyle.GOLEM)
    readiness = Readiness(running.health, ["", name], {"redis": client.ping}, interval=0.1)
    watching = asyncio.create_task(readiness.run())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def becomes(status: Any) -> None:
                deadline = time.monotonic() + 10
                while await _status(stub, name) != status:
                    assert time.monotonic() < deadline, f"{name} never became {status}"
                    await asyncio.sleep(0.05)

            await becomes(SERVING)
            redis_process.kill()
            await becomes(NOT_SERVING)
            assert readiness.down == {"redis"}
            assert await _status(stub, "") == SERVING, "liveness must not follow Redis"
            redis_process.start()
            await becomes(SERVING)
            assert readiness.down == frozenset()
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await running.stop(0)
