"""The engine's view of the ledger (`LedgerView`) backed by the Redis store.

The engine interprets commands in a worker thread and asks for contracts and keys
synchronously. This view answers those questions by running the store's coroutines on the
service's event loop (`run_coroutine_threadsafe`) and waiting for them in the worker thread,
so one Redis connection pool serves both and the loop stays free while the engine waits.

A small command may be interpreted on the event loop itself (`LedgerService`): there the view
answers only from what was read ahead (`prefetch`) and raises `LedgerReadNeeded` for anything
else, and the command is interpreted again in a worker thread.

Reads are not a snapshot: each lookup sees the ledger as it is at that moment. That is safe
because the engine records every contract and key it relied on (`Transaction.input_contracts`
and `key_lookups`) and the commit re-checks them atomically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from cairn.ledger.codec import JsonCodec
from cairn.ledger.lf.ast import Identifier
from cairn.ledger.lf.interp import Contract
from cairn.ledger.model import StoredContract, key_hash
from cairn.ledger.packages import template_id_text
from cairn.ledger.store import LedgerStore
from cairn.runtime.errors import Unavailable

T = TypeVar("T")

# A Redis round trip far beyond this means the store is unreachable; fail the command.
LOOKUP_TIMEOUT_SECONDS = 30.0


class LedgerReadNeeded(RuntimeError):
    """A command interpreted on the event loop needs a read it cannot wait for there; it is
    interpreted again in a worker thread."""


class StoreUnavailable(Unavailable):
    """A ledger lookup the engine needed could not be answered by the store (503); not an
    engine error, so it passes through the engine's error mapping unchanged."""


class RedisLedgerView:
    """Active contracts and the key index from Redis, for one command in a worker thread.

    Contracts already read are kept for the rest of the command, so a choice that fetches
    the same contract repeatedly costs one round trip.
    """

    def __init__(self, store: LedgerStore, codec: JsonCodec,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._codec = codec
        self._loop = loop
        self._contracts: dict[str, Contract | None] = {}
        self._prefetched: dict[str, StoredContract | None] = {}

    async def prefetch(self, contract_id: str) -> StoredContract | None:
        """Read a contract ahead, on the loop, for a lookup the command will make."""
        stored = await self._store.contract(contract_id)
        self._prefetched[contract_id] = stored
        return stored

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coroutine.close()
            # Waiting here would block the very loop that has to answer.
            raise LedgerReadNeeded("RedisLedgerView reads from a worker thread, not the event "
                                   "loop it reads through")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(LOOKUP_TIMEOUT_SECONDS)
        except TimeoutError:
            future.cancel()
            raise StoreUnavailable("The ledger store did not answer a contract lookup in "
                                   f"{LOOKUP_TIMEOUT_SECONDS:.0f} s") from None

    def lookup_contract(self, contract_id: str) -> Contract | None:
        """The active contract with this id, or None if unknown or archived."""
        if contract_id in self._contracts:
            return self._contracts[contract_id]
        if contract_id in self._prefetched:
            stored = self._prefetched[contract_id]
        else:
            stored = self._wait(self._store.contract(contract_id))
        contract = None if stored is None else self._codec.decode_contract(stored.to_json())
        self._contracts[contract_id] = contract
        return contract

    def lookup_key(self, template_id: Identifier, key: Any) -> str | None:
        """The id of the active contract of `template_id` holding `key`, if any."""
        text = template_id_text(template_id)
        return self._wait(self._store.key_holder(text, key_hash(text, key)))
