"""Once, at start: move a ledger written under the earlier key scheme to the current one.

Before the transaction log, the ledger kept its state under `cairn:ledger:*` (a key per contract,
sorted-set indexes per template and stakeholder, a key per contract key) with no history. The
current scheme (`cairn.ledger.store`) keeps everything under one Cluster hash tag. A ledger
started on a Redis that holds only the old keys converts them, so `make run` data survives the
upgrade; the history before the migration is not there to replay, so the pruning offset is set to
the ledger end. One replica migrates (a lock), the others wait for it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import structlog

from cairn.ledger.model import StoredContract
from cairn.ledger.store import LedgerStore, format_offset

LEGACY_PREFIX = "cairn:ledger"
LOCK_SECONDS = 300
BATCH = 500

log = structlog.get_logger()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _contract(record: dict[str, Any]) -> StoredContract:
    return StoredContract(
        contract_id=record["cid"], template_id=record["tid"], payload=record["payload"],
        signatories=tuple(record["sig"]), observers=tuple(record["obs"]),
        agreement_text=record["agr"], has_key="key" in record, key=record.get("key"),
        key_slot=record.get("slot"))


async def migrate_legacy_keys(redis: aioredis.Redis, store: LedgerStore) -> bool:
    """Convert `cairn:ledger:*` to the current scheme if only the old keys exist; True when
    this call migrated."""
    old = LEGACY_PREFIX
    if await redis.exists(store.key("offset"), store.key("packages"), store.key("parties")):
        return False
    if not await redis.exists(f"{old}:offset", f"{old}:packages", f"{old}:parties"):
        return False
    lock = store.key("migrating")
    if not await redis.set(lock, "1", nx=True, ex=LOCK_SECONDS):
        # Another replica migrates: wait for it (polling Redis, which no event here can tell).
        for _ in range(LOCK_SECONDS * 5):
            if not await redis.exists(lock):
                break
            await asyncio.sleep(0.2)
        return False
    try:
        end = int(await redis.get(f"{old}:offset") or 0)
        contracts = 0
        async for keys in _batches(redis, f"{old}:c:*"):
            records = [json.loads(raw) for raw in await redis.mget(keys) if raw is not None]
            async with redis.pipeline(transaction=False) as scores:
                for record in records:
                    scores.zscore(f"{old}:acs:{record['tid']}", record["cid"])
                created_at = await scores.execute()
            async with redis.pipeline(transaction=True) as tx:
                for record, offset in zip(records, created_at, strict=True):
                    contract = _contract(record)
                    head = format_offset(int(offset or 0)) + (contract.key_slot or "")
                    tx.hset(store.key("acs"), contract.contract_id,
                            f"{head}\n{contract.to_text()}")
                    if contract.key_slot:
                        tx.hset(store.key("keys"),
                                f"{contract.template_id}:{contract.key_slot}",
                                contract.contract_id)
                await tx.execute()
            contracts += len(records)
        async for keys in _batches(redis, f"{old}:cmd:*"):
            for key in keys:  # RENAME keeps the expiry
                await redis.rename(key, store.key(_text(key)[len(old) + 1:]))
        for name in ("parties", "packages", "package-dar"):
            if await redis.exists(f"{old}:{name}"):
                await redis.rename(f"{old}:{name}", store.key(name))
        async for keys in _batches(redis, f"{old}:*"):
            await redis.delete(*keys)
        async with redis.pipeline(transaction=True) as tx:
            tx.set(store.key("pruned"), end)
            tx.set(store.key("offset"), end)
            await tx.execute()
        log.warning("ledger_keys_migrated", contracts=contracts, ledger_end=end,
                    old_prefix=old, new_prefix=store.key(""))
        return True
    finally:
        await redis.delete(lock)


async def _batches(redis: aioredis.Redis, pattern: str) -> AsyncIterator[list[Any]]:
    """The keys matching `pattern`, in lists of up to BATCH (collected first: the caller may
    change the keyspace while it goes)."""
    found = [key async for key in redis.scan_iter(match=pattern, count=BATCH)]
    for start in range(0, len(found), BATCH):
        yield found[start:start + BATCH]
