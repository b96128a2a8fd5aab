"""The ledger's Redis store against a real Redis: atomic commits, their re-checks, offsets and
the pub/sub feed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from cairn.ledger.model import Commit, StoredContract, key_hash
from cairn.ledger.store import OFFSET_WIDTH, CommitRejected, LedgerStore

TEMPLATE = "41df902af320227f24036cb113173b9133c222b341294544017bbd2534b28d35:Test:TextKey"


def contract(cid: str, key: str | None = None, observers: tuple[str, ...] = ()
             ) -> StoredContract:
    return StoredContract(
        contract_id=cid, template_id=TEMPLATE,
        payload={"tkParty": "Alice", "tkKey": key or cid, "tkDisclosedTo": list(observers)},
        signatories=("Alice",), observers=observers, has_key=key is not None,
        key={"_1": "Alice", "_2": key} if key else None,
        key_slot=key_hash(TEMPLATE, ("Alice", key)) if key else None,
    )


async def test_commits_take_increasing_offsets_and_are_published(redis: aioredis.Redis) -> None:
    store = LedgerStore(redis)
    assert await store.ledger_end() is None
    pubsub = redis.pubsub()
    await pubsub.subscribe(store.channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    first = await store.commit(Commit(created=(contract("c1"),), command=("app", ("Alice",), "x")))
    second = await store.commit(Commit(created=(contract("c2"),)))
    assert len(first.offset) == OFFSET_WIDTH
    assert int(first.offset) + 1 == int(second.offset)
    assert first.offset < second.offset  # as strings too
    assert await store.ledger_end() == second.offset
    events: list[dict[str, Any]] = []
    while len(events) < 2:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None, "every commit is published"
        events.append(json.loads(message["data"]))
    assert events == [
        {"offset": first.offset, "created": ["c1"], "archived": [], "commandId": "x"},
        {"offset": second.offset, "created": ["c2"], "archived": []},
    ]
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_archive_releases_the_key_and_indexes(redis: aioredis.Redis) -> None:
    store = LedgerStore(redis)
    held = contract("c1", key="k", observers=("Bob",))
    await store.commit(Commit(created=(held,)))
    assert await store.contract_by_key(TEMPLATE, held.key_slot or "") == held
    assert [c.contract_id for c in await store.visible_contracts(["Bob"])] == ["c1"]
    # Archive and re-create under the same key in one transaction.
    successor = contract("c2", key="k")
    await store.commit(Commit(created=(successor,), archived=(held,), inputs=("c1",),
                              key_expectations=((TEMPLATE, held.key_slot or "", "c1"),)))
    assert await store.contract("c1") is None
    assert await store.visible_contracts(["Bob"]) == []
    assert await store.contract_by_key(TEMPLATE, held.key_slot or "") == successor
    # Archiving c1 again fails its re-check and changes nothing.
    end = await store.ledger_end()
    with pytest.raises(CommitRejected) as rejected:
        await store.commit(Commit(archived=(held,), created=(contract("c3"),)))
    assert rejected.value.reason == "inactive"
    assert await store.contract("c3") is None
    assert await store.ledger_end() == end


async def test_stale_key_lookups_and_used_command_ids_are_rejected(redis: aioredis.Redis) -> None:
    store = LedgerStore(redis)
    await store.commit(Commit(created=(contract("c1", key="k"),)))
    slot = key_hash(TEMPLATE, ("Alice", "k"))
    with pytest.raises(CommitRejected) as changed:
        await store.commit(Commit(created=(contract("c2"),),
                                  key_expectations=((TEMPLATE, slot, None),)))
    assert changed.value.reason == "key-taken"
    with pytest.raises(CommitRejected) as moved:
        await store.commit(Commit(created=(contract("c2"),),
                                  key_expectations=((TEMPLATE, slot, "c9"),)))
    assert moved.value.reason == "key-changed"
    command = ("app", ("Alice",), "cmd")
    await store.commit(Commit(created=(contract("c3"),), command=command))
    with pytest.raises(CommitRejected) as duplicate:
        await store.commit(Commit(created=(contract("c4"),), command=command))
    assert duplicate.value.reason == "duplicate-command"
    assert await store.contract("c4") is None


async def test_concurrent_commits_of_one_key_admit_exactly_one(
    redis: aioredis.Redis, redis_url: str
) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(4)]
    stores = [LedgerStore(client) for client in clients]
    try:
        outcomes = await asyncio.gather(
            *(stores[i % 4].commit(Commit(created=(contract(f"c{i}", key="shared"),)))
              for i in range(40)),
            return_exceptions=True)
    finally:
        for client in clients:
            await client.aclose()
    assert sum(1 for o in outcomes if not isinstance(o, BaseException)) == 1
    assert all(isinstance(o, CommitRejected) and o.reason == "key-taken"
               for o in outcomes if isinstance(o, BaseException))
