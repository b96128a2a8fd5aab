"""`python -m cairn.component`: run the component service (health and reflection so far)."""

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
    run_service("component", setup, style=ErrorStyle.GOLEM)
