"""The auth store against a real Redis: identity linking under concurrency, token revocation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace

import redis.asyncio as aioredis

from cairn.auth.store import FAR_FUTURE, Account, AuthStore


async def test_concurrent_first_logins_share_one_account(redis: aioredis.Redis) -> None:
    store = AuthStore(redis)
    candidates = [Account(str(uuid.uuid4()), "n", "e@example.com") for _ in range(20)]
    linked = await asyncio.gather(
        *(store.account_for_identity("github:42", c) for c in candidates)
    )
    assert len({a.id for a in linked}) == 1
    # The losers' candidate accounts were not left behind.
    stored = [await store.account(c.id) for c in candidates]
    assert [a.id for a in stored if a is not None] == [linked[0].id]


async def test_a_deleted_linked_account_is_replaced_on_the_next_login(
    redis: aioredis.Redis,
) -> None:
    store = AuthStore(redis)
    first = await store.account_for_identity("github:7", Account("a1", "n", "e@example.com"))
    await store.delete_account(first.id)
    second = await store.account_for_identity("github:7", Account("a2", "n", "e@example.com"))
    assert second.id == "a2"
    assert await store.account_for_identity("github:7", Account("a3", "n", "e")) == second


async def test_deleting_an_account_revokes_every_token(redis: aioredis.Redis) -> None:
    store = AuthStore(redis)
    await store.put_account(Account("gone", "n", "e@example.com"))
    secrets = [str(uuid.uuid4()) for _ in range(3)]
    for secret in secrets:
        await store.add_token("gone", secret, FAR_FUTURE)
    # Only digests are stored: no key or string value holds a secret.
    for key in await redis.keys("*"):
        value = await redis.get(key) if await redis.type(key) == b"string" else b""
        # The client runs with decode_responses=False: keys and values are bytes.
        stored = (key if isinstance(key, bytes) else b"") + (
            value if isinstance(value, bytes) else b""
        )
        assert stored
        assert all(s.encode() not in stored for s in secrets)
    assert len(await store.tokens("gone")) == 3
    await store.delete_account("gone")
    assert [await store.token_by_secret(s) for s in secrets] == [None, None, None]
    assert await store.tokens("gone") == []
    assert await redis.keys("*gone*") == []


async def test_concurrent_account_changes_are_not_lost(redis: aioredis.Redis) -> None:
    store = AuthStore(redis)
    await store.put_account(Account("busy", "n", "e@example.com"))
    roles = [f"Role{i}" for i in range(15)]

    def adding(role: str) -> Callable[[Account], Account]:
        return lambda account: replace(account, roles=(*account.roles, role))

    await asyncio.gather(*(store.modify_account("busy", adding(r)) for r in roles))
    stored = await store.account("busy")
    assert stored is not None and sorted(stored.roles) == sorted(roles)
    assert await store.modify_account("missing", adding("x")) is None
