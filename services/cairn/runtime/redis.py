"""Redis connections: one asyncio client per process, from CAIRN_REDIS_URL."""

from __future__ import annotations

import redis.asyncio as aioredis


def connect(url: str) -> aioredis.Redis:
    # decode_responses=False: values are JSON or binary; callers decode what they need.
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)
