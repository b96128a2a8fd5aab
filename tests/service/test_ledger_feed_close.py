"""The ledger's feed stops when closed, even when its cancellation is lost in a read timeout.

The follower reads pub/sub under a 0.1 s timeout; a cancellation that lands as that timeout
fires can be taken for the timeout (asyncio.timeout, Python 3.11) and the read simply returns
None. The follower then went on reading and the ledger process never exited after SIGTERM.
Here a pub/sub client that loses one cancellation exactly so stands in for the race.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from cairn.ledger.feed import LedgerFeed
from cairn.ledger.querystore import QueryStore
from cairn.ledger.store import LedgerStore


async def test_close_ends_the_follower_even_if_a_cancellation_is_lost(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_get_message = PubSub.get_message
    lost: list[bool] = []

    async def get_message_losing_one_cancel(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        try:
            return await real_get_message(self, *args, **kwargs)
        except asyncio.CancelledError:
            if lost:
                raise
            lost.append(True)
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return None  # what a read timeout that took the cancellation answers

    monkeypatch.setattr(PubSub, "get_message", get_message_losing_one_cancel)
    feed = LedgerFeed(redis, LedgerStore(redis), QueryStore())
    await feed.start()
    await asyncio.sleep(0.3)  # the follower is waiting in get_message
    loop = asyncio.get_running_loop()
    started = loop.time()
    closing = asyncio.ensure_future(feed.close())
    done, _ = await asyncio.wait([closing], timeout=5)
    assert lost == [True], "the stand-in did lose the cancellation"
    assert closing in done, "close() waits for a follower that never stops"
    assert loop.time() - started < 5
