"""`python -m cairn.ledger`: run the ledger service (the DAML JSON API v1 over Cairn's engine).

Besides the gRPC server it runs the WebSocket streams (`cairn.ledger.streams`) on
`CAIRN_LEDGER_WS_PORT`, with their own Redis client so that they can be closed after the gRPC
server has drained, before their connection goes.
"""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from cairn import blobstore
from cairn.ledger.grpc_api import LedgerApi, LedgerCallers
from cairn.ledger.packages import PackageRegistry
from cairn.ledger.service import LedgerService
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.store import LedgerStore
from cairn.ledger.streams import (
    StreamServer,
    StreamSettings,
    TransactionFeed,
    start_stream_server,
)
from cairn.ledger.streams import stream_redis as redis_connection
from cairn.ledger.v1 import ledger_service_pb2_grpc
from cairn.runtime.entrypoint import Wiring, run, serve
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.logging import configure_logging
from cairn.runtime.settings import Settings


async def main(settings: Settings) -> None:
    stream_settings = StreamSettings.from_env(grpc_port=settings.grpc_port("ledger"))
    streams: list[tuple[StreamServer, TransactionFeed]] = []
    stream_redis: aioredis.Redis | None = None

    async def setup(settings: Settings, redis: aioredis.Redis) -> Wiring:
        nonlocal stream_redis
        ledger_settings = LedgerSettings.from_env(run_dir=settings.run_dir)
        store = LedgerStore(redis)
        blobs = ledger_settings.blob_store()
        packages = PackageRegistry(store, blobs,
                                   ledger_settings.max_dar_bytes)
        # Decode the packages uploaded before this process started, once, before serving.
        await packages.refresh()
        api = LedgerApi(
            LedgerService(store, packages),
            LedgerCallers(ledger_settings.tokens, settings.internal_secret),
        )
        # Streams listen before the gRPC server reports SERVING, so a ready ledger is ready
        # on both ports.
        stream_redis = redis_connection(settings.redis_url)
        streams.append(await start_stream_server(settings.bind_host, stream_settings,
                                                 stream_redis, packages, ledger_settings.tokens))

        def register(server: grpc.aio.Server) -> None:
            ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server(api, server)

        return Wiring(register, {"blobs": lambda: blobstore.probe(blobs)})

    try:
        await serve("ledger", settings, setup, style=ErrorStyle.LEDGER)
    finally:
        for server, feed in streams:
            await server.close()
            await feed.close()
        if stream_redis is not None:
            await stream_redis.aclose()


if __name__ == "__main__":
    ledger_process_settings = Settings.from_env()
    configure_logging(ledger_process_settings.log_level, ledger_process_settings.log_format,
                      service="ledger")
    run(main(ledger_process_settings), ledger_process_settings)
