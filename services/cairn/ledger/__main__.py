"""`python -m cairn.ledger`: run the ledger service (the DAML JSON API v1 over Cairn's engine).

Besides the gRPC server it runs the query store's feed and the WebSocket streams
(`cairn.ledger.websocket`) on `CAIRN_LEDGER_WS_PORT`, with their own Redis client so that they
can be closed after the gRPC server has drained, before their connections go.
"""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from cairn import blobstore
from cairn.ledger.app import LedgerApp
from cairn.ledger.feed import feed_redis
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.streams import StreamSettings
from cairn.ledger.v1 import ledger_service_pb2_grpc
from cairn.ledger.websocket import StreamServer
from cairn.runtime.entrypoint import Wiring, run, serve
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.logging import configure_logging
from cairn.runtime.settings import Settings


async def main(settings: Settings) -> None:
    stream_settings = StreamSettings.from_env(grpc_port=settings.grpc_port("ledger"))
    apps: list[LedgerApp] = []
    servers: list[StreamServer] = []
    feed_client: aioredis.Redis | None = None

    async def setup(settings: Settings, redis: aioredis.Redis) -> Wiring:
        nonlocal feed_client
        ledger_settings = LedgerSettings.from_env(run_dir=settings.run_dir)
        feed_client = feed_redis(settings.redis, settings.redis_timeout_seconds)
        # The query store is built and the streams listen before the gRPC server reports
        # SERVING, so a ready ledger answers reads and streams at once.
        app = await LedgerApp.start(redis, feed_client, ledger_settings,
                                    settings.internal_secret, stream_settings.heartbeat_seconds)
        apps.append(app)
        server = StreamServer(app.streams, ledger_settings.tokens, stream_settings)
        await server.start(settings.bind_host)
        servers.append(server)

        def register(server: grpc.aio.Server) -> None:
            ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server(app.api, server)

        return Wiring(register, {"blobs": lambda: blobstore.probe(app.blobs),
                                 "query-store": app.feed.probe})

    try:
        await serve("ledger", settings, setup, style=ErrorStyle.LEDGER)
    finally:
        for server in servers:
            await server.close()
        for app in apps:
            await app.close()
        if feed_client is not None:
            await feed_client.aclose()


if __name__ == "__main__":
    ledger_process_settings = Settings.from_env()
    configure_logging(ledger_process_settings.log_level, ledger_process_settings.log_format,
                      service="ledger")
    run(main(ledger_process_settings), ledger_process_settings)
