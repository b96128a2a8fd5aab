"""Verified tokens remembered by the auth service: served from memory, dropped on every change."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from cairn.auth.service import UNKNOWN_TOKEN, Authenticator
from cairn.auth.store import FAR_FUTURE, Account, AuthStore, secret_digest
from cairn.auth.token_cache import TokenCache
from cairn.runtime.errors import Unauthenticated
from cairn.runtime.principal import Principal


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def following(cache: TokenCache, redis: aioredis.Redis) -> AsyncIterator[TokenCache]:
    task = asyncio.create_task(cache.follow(redis))
    try:
        await until(lambda: cache.live)
        yield cache
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def new_token(store: AuthStore, account: str = "alice") -> tuple[str, str]:
    await store.put_account(Account(account, "n", f"{account}@example.com"))
    secret = str(uuid.uuid4())
    token = await store.add_token(account, secret, FAR_FUTURE)
    return secret, token.id


async def test_a_verified_token_is_answered_from_memory(redis: aioredis.Redis) -> None:
    store = AuthStore(redis)
    secret, token_id = await new_token(store)
    async with following(TokenCache(60), redis) as cache:
        authn = Authenticator(store, cache)
        assert await authn.authenticate(secret) == Principal("alice", token_id, ())
        # Removed behind the store's back (no change announced): still served from memory.
        await redis.delete(f"cairn:{{auth}}:secret:{secret_digest(secret)}")
        assert await authn.authenticate(secret) == Principal("alice", token_id, ())


async def test_every_process_forgets_a_deleted_token_at_once(redis: aioredis.Redis) -> None:
    store = AuthStore(redis)
    secret, token_id = await new_token(store)
    async with following(TokenCache(60), redis) as one, following(TokenCache(60), redis) as two:
        first, second = Authenticator(store, one), Authenticator(store, two)
        await first.authenticate(secret)
        await second.authenticate(secret)
        generations = (one.generation, two.generation)
        await store.delete_token(token_id)
        await until(lambda: (one.generation, two.generation) > generations)
        for authn in (first, second):
            with pytest.raises(Unauthenticated, match=UNKNOWN_TOKEN):
                await authn.authenticate(secret)


async def test_a_role_change_is_seen_on_the_next_check(redis: aioredis.Redis) -> None:
    store = AuthStore(redis)
    secret, _ = await new_token(store)
    async with following(TokenCache(60), redis) as cache:
        authn = Authenticator(store, cache)
        assert not (await authn.authenticate(secret)).is_admin
        generation = cache.generation
        await store.modify_account("alice", lambda a: replace(a, roles=("Admin",)))
        await until(lambda: cache.generation > generation)
        assert (await authn.authenticate(secret)).is_admin


async def test_nothing_is_cached_while_the_change_channel_is_not_live(
    redis: aioredis.Redis,
) -> None:
    store = AuthStore(redis)
    secret, _ = await new_token(store)
    cache = TokenCache(60)  # never followed
    authn = Authenticator(store, cache)
    await authn.authenticate(secret)
    await redis.delete(f"cairn:{{auth}}:secret:{secret_digest(secret)}")
    with pytest.raises(Unauthenticated, match=UNKNOWN_TOKEN):
        await authn.authenticate(secret)


def test_entries_end_with_their_token_and_their_ttl() -> None:
    cache = TokenCache(60)
    cache.live = True
    alice = Principal("alice")
    cache.put("expired", alice, time.time() - 1, cache.generation)
    cache.put("valid", alice, time.time() + 3600, cache.generation)
    stale = cache.generation
    cache.clear()
    cache.put("raced", alice, time.time() + 3600, stale)  # looked up before the invalidation
    assert (cache.get("expired"), cache.get("raced")) == (None, None)
    assert cache.get("valid") is None  # cleared
    cache.put("valid", alice, time.time() + 3600, cache.generation)
    assert cache.get("valid") == alice
    assert TokenCache(0).get("valid") is None
