"""A Redis written by the ledger's earlier key scheme (`cairn:ledger:*`, no log) is converted once
at start, against a real Redis."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from cairn.ledger.legacy import migrate_legacy_keys
from cairn.ledger.model import key_hash
from cairn.ledger.store import LedgerStore

PKG = "41df902af320227f24036cb113173b9133c222b341294544017bbd2534b28d35"
IOU = f"{PKG}:Iou:Iou"
KEYED = f"{PKG}:Test:TextKey"


async def write_legacy_ledger(redis: aioredis.Redis) -> str:
    old = "cairn:ledger"
    iou = {"cid": "c1", "tid": IOU, "payload": {"issuer": "Alice", "owner": "Alice",
           "currency": "USD", "amount": "1.0", "observers": []},
           "sig": ["Alice"], "obs": [], "agr": ""}
    slot = key_hash(KEYED, ("Alice", "k"))
    keyed = {"cid": "c2", "tid": KEYED, "payload": {"tkParty": "Alice", "tkKey": "k",
             "tkDisclosedTo": ["Bob"]}, "sig": ["Alice"], "obs": ["Bob"], "agr": "",
             "key": {"_1": "Alice", "_2": "k"}, "slot": slot}
    await redis.set(f"{old}:offset", 3)
    await redis.set(f"{old}:c:c1", json.dumps(iou))
    await redis.set(f"{old}:c:c2", json.dumps(keyed))
    await redis.zadd(f"{old}:acs:{IOU}", {"c1": 1})
    await redis.zadd(f"{old}:acs:{KEYED}", {"c2": 3})
    for party, cid, tid in (("Alice", "c1", IOU), ("Alice", "c2", KEYED), ("Bob", "c2", KEYED)):
        await redis.zadd(f"{old}:vis:{party}", {cid: 1})
        await redis.zadd(f"{old}:vis:{party}:{tid}", {cid: 1})
    await redis.set(f"{old}:key:{KEYED}:{slot}", "c2")
    await redis.set(f"{old}:cmd:abc", "00000000000000000002", ex=3600)
    await redis.hset(f"{old}:parties", mapping={"Alice": "{}", "Bob": "{}"})
    return slot


async def test_old_keys_become_the_current_scheme_once(redis: aioredis.Redis) -> None:
    slot = await write_legacy_ledger(redis)
    store = LedgerStore(redis)
    assert await migrate_legacy_keys(redis, store)
    assert await migrate_legacy_keys(redis, store) is False  # only once
    assert await redis.keys("cairn:ledger:*") == []
    assert await store.ledger_end() == "00000000000000000003"
    assert await store.pruned_offset() == 3  # no history before the migration
    assert await store.key_holder(KEYED, slot) == "c2"
    keyed = await store.contract("c2")
    assert keyed is not None and keyed.observers == ("Bob",) and keyed.key_slot == slot
    _, rows = await store.scan_active(0, 100)
    assert sorted((r.contract_id, r.offset, r.parties) for r in rows) == [
        ("c1", 1, ("Alice",)), ("c2", 3, ("Alice", "Bob"))]
    assert [p.identifier for p in await store.parties()] == ["Alice", "Bob"]
    assert 0 < await redis.ttl(store.key("cmd:abc")) <= 3600
    # The ledger goes on from there.
    assert await store.read_log(3, 10) == []


async def test_a_current_ledger_is_left_alone(redis: aioredis.Redis) -> None:
    store = LedgerStore(redis)
    await redis.set(store.key("offset"), 5)
    await redis.set("cairn:ledger:offset", 3)
    assert await migrate_legacy_keys(redis, store) is False
    assert await redis.get("cairn:ledger:offset") == b"3"
