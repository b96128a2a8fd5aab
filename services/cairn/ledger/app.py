"""The ledger's parts wired together: what `python -m cairn.ledger` runs and tests start.

Two Redis clients: the process's main one for commands and reads, and a bounded one for the feed
(its pub/sub subscription and log reads) and the streams, so those can be closed after the gRPC
server has drained, while their connections still work.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from cairn.blobstore.port import BlobStore
from cairn.ledger.feed import LedgerFeed
from cairn.ledger.grpc_api import LedgerApi, LedgerCallers
from cairn.ledger.legacy import migrate_legacy_keys
from cairn.ledger.packages import PackageRegistry
from cairn.ledger.querystore import QueryStore
from cairn.ledger.service import LedgerService
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.store import LedgerStore
from cairn.ledger.streams import DEFAULT_HEARTBEAT_SECONDS, LedgerStreams


@dataclass
class LedgerApp:
    store: LedgerStore
    blobs: BlobStore
    packages: PackageRegistry
    feed: LedgerFeed
    service: LedgerService
    streams: LedgerStreams
    api: LedgerApi

    @classmethod
    async def start(cls, redis: aioredis.Redis, feed_redis: aioredis.Redis,
                    settings: LedgerSettings, internal_secret: str,
                    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS) -> LedgerApp:
        """Load the packages and build the query store before anything is served."""
        store = LedgerStore(redis, max_deduplication_seconds=settings.max_deduplication_seconds)
        await migrate_legacy_keys(redis, store)
        blobs = settings.blob_store()
        packages = PackageRegistry(store, blobs, settings.max_dar_bytes, settings.dar_limits)
        await packages.refresh()
        feed_store = LedgerStore(feed_redis)
        feed = LedgerFeed(feed_redis, feed_store, QueryStore(settings.query_store_max_contracts),
                          retention=settings.retention,
                          consistency_timeout=settings.consistency_timeout_seconds)
        await feed.start()
        service = LedgerService(store, packages, feed, settings.inline_max_calls)
        streams = LedgerStreams(packages, feed_store, feed, heartbeat_seconds)
        api = LedgerApi(service, LedgerCallers(settings.tokens, internal_secret), streams)
        return cls(store, blobs, packages, feed, service, streams, api)

    async def close(self) -> None:
        await self.feed.close()
