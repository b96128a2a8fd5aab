"""Cairn's key Redis flows against highly available Redis: Sentinel and a 3-primary Cluster.

Both topologies are real redis-server processes (the binary `make run` uses), started by
`tests/redis_topologies.py`. The flows are the stores' own: create a component and a new version
(Lua scripts), commit to the ledger (one script over many keys), add a token and look it up by
its secret (MULTI/EXEC). The Sentinel test then fails the primary over while a writer runs:
every write the client saw succeed must be on the promoted primary.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from cairn.auth.store import AuthStore
from cairn.component.model import ComponentVersion
from cairn.component.store import ComponentStore
from cairn.ledger.model import Commit, StoredContract
from cairn.ledger.store import LedgerStore
from cairn.runtime.redis import (
    Redis,
    RedisTarget,
    ReplicaAckTimeout,
    adopt_legacy_keys,
    connect,
    is_unavailable,
)
from tests.redis_topologies import (
    MASTER_NAME,
    ClusterSetup,
    SentinelSetup,
    cluster_setup,
    sentinel_setup,
    wait_for,
)

TEMPLATE = "41df902af320227f24036cb113173b9133c222b341294544017bbd2534b28d35:Test:TextKey"
# Issue 10 makes this the ledger's own default; the Cluster test needs every ledger key in one slot.
LEDGER_PREFIX = "cairn:{ledger}"


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    with sentinel_setup(tmp_path_factory.mktemp("sentinel")) as setup:
        yield setup


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    with cluster_setup(tmp_path_factory.mktemp("cluster")) as setup:
        yield setup


@pytest.fixture
async def sentinel_client(sentinels: SentinelSetup) -> AsyncIterator[Redis]:
    client = connect(RedisTarget(sentinels=_pairs(sentinels.sentinel_addresses),
                                 sentinel_master=MASTER_NAME, replica_acks=1))
    yield client
    await client.aclose()


@pytest.fixture
async def cluster_client(cluster: ClusterSetup) -> AsyncIterator[Redis]:
    client = connect(RedisTarget(cluster_nodes=_pairs(cluster.node_addresses)))
    yield client
    await client.aclose()


def _pairs(addresses: str) -> tuple[tuple[str, int], ...]:
    return tuple((host, int(port)) for host, port in
                 (item.rsplit(":", 1) for item in addresses.split(",")))


def version(component_id: str, number: int) -> ComponentVersion:
    return ComponentVersion(
        component_id=component_id, version=number, name=f"c-{component_id[:8]}",
        project_id="p-ha", owner_account_id="root", size=10, sha256="0" * 64,
        blob_key=f"components/{component_id}/{number}.wasm",
        created_at="2026-12-02T00:00:00Z", component_type="Durable",
        metadata={"exports": [], "producers": [], "memories": []}, template_exports=[],
    )


def contract(cid: str) -> StoredContract:
    return StoredContract(contract_id=cid, template_id=TEMPLATE,
                          payload={"tkParty": "Alice", "tkKey": cid, "tkDisclosedTo": []},
                          signatories=("Alice",), observers=(), has_key=False, key=None,
                          key_slot=None)


async def key_flows(client: Redis) -> None:
    """Create a component version, commit to the ledger, look a token up: each must hold."""
    components = ComponentStore(client)
    component_id = str(uuid.uuid4())
    first = version(component_id, 0)
    assert await components.create(first) is None
    await components.add_version(first.successor("2026-12-02T00:00:01Z"), reason="update")
    latest = await components.latest(component_id)
    assert latest is not None and latest.version == 1
    assert component_id in await components.ids_in_project("p-ha")

    ledger = LedgerStore(client, prefix=LEDGER_PREFIX)
    cid = f"ha-{uuid.uuid4().hex}"
    committed = await ledger.commit(Commit(created=(contract(cid),),
                                           command=("app", ("Alice",), cid)))
    assert await ledger.contract(cid) == contract(cid)
    assert await ledger.ledger_end() >= committed.offset  # type: ignore[operator]

    tokens = AuthStore(client)
    secret = str(uuid.uuid4())
    token = await tokens.add_token("root", secret, "2100-01-01T00:00:00Z")
    assert await tokens.token_by_secret(secret) == token
    assert [t.id for t in await tokens.tokens("root")].count(token.id) == 1


async def test_key_flows_through_sentinel(sentinel_client: Redis) -> None:
    await key_flows(sentinel_client)


async def test_key_flows_on_a_three_primary_cluster(cluster: ClusterSetup,
                                                    cluster_client: Redis) -> None:
    await key_flows(cluster_client)
    # Every service's keys are hash-tagged into one slot each, and the slots are on different
    # primaries' share of the key space as the cluster assigns them.
    sync = redis.RedisCluster(host="127.0.0.1", port=cluster.primaries[0].port)
    try:
        for tag in ("{auth}", "{component}", "{project}", "{ledger}"):
            keys = sync.keys(f"cairn:{tag}:*", target_nodes=redis.RedisCluster.ALL_NODES)
            slots = {sync.keyslot(k) for k in keys}
            assert len(slots) <= 1, (tag, slots)
        assert sync.keys("cairn:{auth}:*", target_nodes=redis.RedisCluster.ALL_NODES)
    finally:
        sync.close()


async def test_a_sentinel_failover_mid_run_loses_no_acknowledged_write(
    sentinels: SentinelSetup, sentinel_client: Redis,
) -> None:
    tokens = AuthStore(sentinel_client)
    acknowledged: list[str] = []
    refused = 0
    before = sentinels.current_primary_port()
    failed_over = asyncio.Event()
    writes_after_failover = 0

    async def writer() -> None:
        nonlocal refused, writes_after_failover
        deadline = time.monotonic() + 60
        while (len(acknowledged) < 150 or writes_after_failover < 30) \
                and time.monotonic() < deadline:
            secret = str(uuid.uuid4())
            try:
                await tokens.add_token("root", secret, "2100-01-01T00:00:00Z")
            except Exception as err:  # an outage during the switch: not acknowledged
                assert is_unavailable(err), repr(err)
                refused += 1
                await asyncio.sleep(0.05)
                continue
            acknowledged.append(secret)
            if failed_over.is_set():
                writes_after_failover += 1
            if len(acknowledged) == 50:
                asyncio.get_running_loop().run_in_executor(None, failover)

    def failover() -> None:
        sentinels.sentinels[0].client().execute_command("SENTINEL FAILOVER", MASTER_NAME)
        wait_for(lambda: sentinels.current_primary_port() != before, "the Sentinels promote")
        failed_over.set()

    await asyncio.wait_for(writer(), 90)
    assert failed_over.is_set(), "the failover happened during the run"
    assert writes_after_failover >= 30, "the client followed the promoted primary"
    after = sentinels.current_primary_port()
    assert after != before
    # The old primary is a replica of the new one now; read from the new primary directly.
    promoted = redis.Redis(port=after, socket_timeout=5)
    wait_for(lambda: promoted.info("replication")["role"] == "master", "the new primary serves")
    reader = connect(f"redis://127.0.0.1:{after}/0")
    try:
        lost = [s for s in acknowledged
                if await AuthStore(reader).token_by_secret(s) is None]
    finally:
        await reader.aclose()
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged writes lost"
    print(f"failover: {len(acknowledged)} acknowledged, {refused} refused during the switch")


async def test_a_write_no_replica_confirms_is_refused_as_unavailable(redis_url: str) -> None:
    """One server without replicas: with replica_acks=1 a write cannot be acknowledged."""
    client = connect(RedisTarget(url=redis_url, replica_acks=1, replica_ack_timeout_ms=50))
    try:
        with pytest.raises(ReplicaAckTimeout, match="confirmed by 0 of 1 replica"):
            await client.set("cairn:{test}:ack", "1")
        with pytest.raises(ReplicaAckTimeout):
            await AuthStore(client).add_token("root", "s", "2100-01-01T00:00:00Z")
        assert await client.get("cairn:{test}:ack") == b"1"  # reads need no acknowledgement
    finally:
        await client.aclose()


async def test_keys_written_before_the_hash_tags_are_adopted_once(
    redis: aioredis.Redis,
) -> None:
    await redis.set("cairn:auth:token:t1", "old")
    await redis.set("cairn:{auth}:token:t2", "new")
    await redis.set("cairn:auth:token:t2", "stale")  # never overwrites a newer key
    assert await adopt_legacy_keys(redis, "cairn:auth:", "cairn:{auth}:") == 1
    assert await redis.get("cairn:{auth}:token:t1") == b"old"
    assert await redis.get("cairn:{auth}:token:t2") == b"new"
    assert await adopt_legacy_keys(redis, "cairn:auth:", "cairn:{auth}:") == 0
