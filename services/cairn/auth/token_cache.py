"""Verified Golem tokens, remembered by each auth process so ext_authz needs no Redis read.

A cache hit answers `Authenticator.authenticate` without the three Redis reads (secret digest ->
token -> account) that every Envoy ext_authz check would otherwise make. Correctness rests on
invalidation, not on the TTL:

- Every change to tokens or accounts (`AuthStore`: token deleted, account deleted or changed)
  publishes on `CHANGES_CHANNEL` after it is written; every auth process listens on it and drops
  its whole cache. Changes are rare next to checks, so dropping everything is cheap.
- Nothing is cached while the subscription is not live (before it is confirmed, and after any
  error on it until it is confirmed again), so a lost notification can never serve a revoked
  token: it only costs the Redis reads.
- A lookup that started before an invalidation is not cached after it (generation counter).
- An entry also expires with its token, and after `ttl_seconds` (CAIRN_AUTH_TOKEN_CACHE_SECONDS;
  0 turns the cache off).

A token deleted through one auth process stops working on every process once the others have read
the notification: within milliseconds, not at the end of the TTL.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from cairn.runtime.principal import Principal

CHANGES_CHANNEL = "cairn:auth:changes"
MAX_ENTRIES = 10_000
RETRY_SECONDS = 1.0
# Below the client's socket timeout, so a quiet channel is not mistaken for a dead one.
POLL_SECONDS = 1.0

log = structlog.get_logger()


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    token_expires: float  # epoch seconds
    cached_until: float  # monotonic seconds


class TokenCache:
    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[str, _Entry] = {}
        self.generation = 0
        self.live = False  # the invalidation subscription is confirmed

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if time.monotonic() >= entry.cached_until or time.time() >= entry.token_expires:
            del self._entries[digest]
            return None
        return entry.principal

    def put(self, digest: str, principal: Principal, token_expires: float,
            generation: int) -> None:
        """Remember a verified token, unless the cache was invalidated since `generation`."""
        if not self.live or self._ttl <= 0 or generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = _Entry(principal, token_expires, time.monotonic() + self._ttl)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1

    def _down(self) -> None:
        self.live = False
        self.clear()

    async def follow(self, redis: aioredis.Redis) -> None:
        """Listen for changes until cancelled, resubscribing after any error."""
        if self._ttl <= 0:
            return
        while True:
            pubsub = redis.pubsub()
            try:
                await pubsub.subscribe(CHANGES_CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=POLL_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.clear()  # changes made before the subscription was live
                        self.live = True
                    elif message["type"] == "message":
                        self.clear()
            except asyncio.CancelledError:
                self._down()
                raise
            except Exception as err:  # any failure of the channel: stop caching, then retry
                self._down()
                log.warning("token_cache_unsubscribed", error=str(err))
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]


async def publish_change(redis: aioredis.Redis) -> None:
    await redis.publish(CHANGES_CHANNEL, "1")
