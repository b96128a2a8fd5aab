"""The ledger's Redis store against a real Redis: atomic commits with their re-checks, the
transaction log (appended and published in the same step), retention, deduplication periods and
the ACS scan the query store is built from."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from cairn.ledger.model import Commit, Deduplication, StoredContract, key_hash
from cairn.ledger.store import (
    OFFSET_WIDTH,
    CommitRejected,
    HistoryPruned,
    LedgerStore,
    LoggedTransaction,
    parse_entry,
)

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


def shape(transaction: LoggedTransaction) -> tuple[object, ...]:
    return (transaction.offset, transaction.command_id,
            [(r.contract_id, r.key_slot, r.text) for r in transaction.created],
            [(r.contract_id, r.key_slot, r.text) for r in transaction.archived])


async def test_commits_are_logged_and_published_in_one_step(redis: aioredis.Redis) -> None:
    store = LedgerStore(redis)
    assert await store.ledger_end() is None
    pubsub = redis.pubsub()
    await pubsub.subscribe(store.channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    held = contract("c1", key="k", observers=("Bob",))
    first = await store.commit(Commit(created=(held,), command=("app", ("Alice",), "x"),
                                      submission_id="s-1"))
    second = await store.commit(Commit(created=(contract("c2"),), archived=(held,),
                                       inputs=("c1",)))
    assert len(first.offset) == OFFSET_WIDTH
    assert int(first.offset) + 1 == int(second.offset)
    assert first.offset < second.offset  # as strings too
    assert await store.ledger_end() == second.offset
    published = []
    while len(published) < 2:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None, "every commit is published"
        published.append(message["data"])
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    logged = await store.read_log(0, 10)
    assert [shape(parse_entry(raw)) for raw in published] == [shape(t) for t in logged]
    one, two = logged
    header = json.loads(published[0].decode().split("\n")[0])
    assert header["commandId"] == "x" and header["submissionId"] == "s-1"
    assert abs(header["time"] / 1000 - time.time()) < 60
    assert [r.contract_id for r in one.created] == ["c1"] and one.archived == ()
    assert one.created[0].text == held.to_text()
    assert one.created[0].parties == ("Alice", "Bob")
    assert one.created[0].key_slot == held.key_slot
    # An archive carries the archived contract as it was stored, for streams that replay it.
    assert [r.contract_id for r in two.archived] == ["c1"]
    assert two.archived[0].payload == held.payload
    assert await store.read_log(int(second.offset), 10) == []


async def test_archive_releases_the_key(redis: aioredis.Redis) -> None:
    store = LedgerStore(redis)
    held = contract("c1", key="k", observers=("Bob",))
    await store.commit(Commit(created=(held,)))
    assert await store.key_holder(TEMPLATE, held.key_slot or "") == "c1"
    assert await store.contract("c1") == held
    # Archive and re-create under the same key in one transaction.
    successor = contract("c2", key="k")
    await store.commit(Commit(created=(successor,), archived=(held,), inputs=("c1",),
                              key_expectations=((TEMPLATE, held.key_slot or "", "c1"),)))
    assert await store.contract("c1") is None
    assert await store.key_holder(TEMPLATE, held.key_slot or "") == "c2"
    # Archiving c1 again fails its re-check and changes nothing, not even the log.
    end = await store.ledger_end()
    with pytest.raises(CommitRejected) as rejected:
        await store.commit(Commit(archived=(held,), created=(contract("c3"),)))
    assert rejected.value.reason == "inactive"
    assert await store.contract("c3") is None
    assert await store.ledger_end() == end
    assert len(await store.read_log(0, 10)) == 2


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


async def test_deduplication_periods_by_duration_and_by_offset(redis: aioredis.Redis) -> None:
    store = LedgerStore(redis)
    command = ("app", ("Alice",), "again")
    first = await store.commit(Commit(created=(contract("c1"),), command=command))
    await asyncio.sleep(0.05)
    # A window shorter than the time since the first submission lets it through ...
    second = await store.commit(Commit(created=(contract("c2"),), command=command,
                                       deduplication=Deduplication(window_ms=10)))
    # ... a long one does not.
    with pytest.raises(CommitRejected):
        await store.commit(Commit(created=(contract("c3"),), command=command,
                                  deduplication=Deduplication(window_ms=60_000)))
    # By offset: a duplicate only if the command was accepted after that offset.
    with pytest.raises(CommitRejected):
        await store.commit(Commit(created=(contract("c3"),), command=command,
                                  deduplication=Deduplication(after_offset=first.offset)))
    third = await store.commit(Commit(created=(contract("c3"),), command=command,
                                      deduplication=Deduplication(after_offset=second.offset)))
    assert int(third.offset) == int(second.offset) + 1


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
    # The log has exactly the one commit.
    assert len(await LedgerStore(redis).read_log(0, 100)) == 1


async def test_retention_by_count_and_age_records_the_pruning_offset(
    redis: aioredis.Redis,
) -> None:
    store = LedgerStore(redis)
    for i in range(10):
        await store.commit(Commit(created=(contract(f"c{i}"),)))
    assert await store.pruned_offset() == 0
    assert await store.prune(max_transactions=0, max_age_seconds=0) == 0
    assert await store.prune(max_transactions=4, max_age_seconds=0) == 6
    assert [t.offset for t in await store.read_log(6, 100)] == [7, 8, 9, 10]
    with pytest.raises(HistoryPruned) as pruned:
        await store.read_log(5, 100)
    assert pruned.value.pruned == 6
    # The pruning offset never goes back, whatever a later round keeps.
    assert await store.prune(max_transactions=100, max_age_seconds=0) == 6
    # By age: everything is older than a millisecond after a short pause.
    await asyncio.sleep(0.01)
    assert await store.prune(max_transactions=0, max_age_seconds=0.001) == 10
    assert await store.read_log(10, 100) == []
    with pytest.raises(HistoryPruned):
        await store.read_log(9, 100)
    # Commits go on after the log was emptied.
    await store.commit(Commit(created=(contract("c10"),)))
    assert [t.offset for t in await store.read_log(10, 100)] == [11]


async def test_the_acs_scan_returns_every_active_contract_once(redis: aioredis.Redis) -> None:
    store = LedgerStore(redis)
    created = [contract(f"c{i}", key=f"k{i}" if i % 3 == 0 else None) for i in range(250)]
    for start in range(0, 250, 50):
        await store.commit(Commit(created=tuple(created[start:start + 50])))
    await store.commit(Commit(archived=(created[7],), inputs=("c7",)))
    rows = {}
    cursor = 0
    while True:
        cursor, batch = await store.scan_active(cursor, 40)
        rows.update((row.contract_id, row) for row in batch)
        if cursor == 0:
            break
    assert set(rows) == {c.contract_id for c in created} - {"c7"}
    assert rows["c3"].key_slot == created[3].key_slot and rows["c4"].key_slot is None
    assert rows["c0"].offset == 1 and rows["c249"].offset == 5
    assert rows["c42"].text == created[42].to_text()


async def test_every_key_shares_one_cluster_hash_tag(redis: aioredis.Redis) -> None:
    store = LedgerStore(redis)
    await store.commit(Commit(created=(contract("c1", key="k"),),
                              command=("app", ("Alice",), "x")))
    await store.prune(max_transactions=1, max_age_seconds=0)
    keys = [k.decode() for k in await redis.keys("*")]
    assert keys and all("{ledger}" in k for k in keys), keys
