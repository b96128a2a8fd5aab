"""`python -m cairn.ledger`: run the ledger service (the DAML JSON API v1 over Cairn's engine)."""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from cairn.ledger.grpc_api import LedgerApi, LedgerCallers
from cairn.ledger.packages import PackageRegistry
from cairn.ledger.service import LedgerService
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.store import LedgerStore
from cairn.ledger.v1 import ledger_service_pb2_grpc
from cairn.runtime.entrypoint import Registrar, run_service
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.settings import Settings


async def setup(settings: Settings, redis: aioredis.Redis) -> Registrar:
    ledger_settings = LedgerSettings.from_env(run_dir=settings.run_dir)
    store = LedgerStore(redis)
    packages = PackageRegistry(store, ledger_settings.blob_store(), ledger_settings.max_dar_bytes)
    # Decode the packages uploaded before this process started, once, before serving.
    await packages.refresh()
    api = LedgerApi(
        LedgerService(store, packages),
        LedgerCallers(ledger_settings.tokens, settings.internal_secret),
    )

    def register(server: grpc.aio.Server) -> None:
        ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server(api, server)

    return register


if __name__ == "__main__":
    run_service("ledger", setup, style=ErrorStyle.LEDGER)
