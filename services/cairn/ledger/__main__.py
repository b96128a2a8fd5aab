"""`python -m cairn.ledger`: run the ledger service (health and reflection until its API lands)."""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from cairn.runtime.entrypoint import Registrar, run_service
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.settings import Settings


async def setup(settings: Settings, redis: aioredis.Redis) -> Registrar:
    def register(server: grpc.aio.Server) -> None:
        """No RPCs of its own yet: the runtime adds health and reflection."""

    return register


if __name__ == "__main__":
    run_service("ledger", setup, style=ErrorStyle.LEDGER)
