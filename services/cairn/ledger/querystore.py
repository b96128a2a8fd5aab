"""The query store: this replica's in-memory projection of the active contract set.

Built from Redis at start (`LedgerFeed` scans the ACS) and kept current by applying every
transaction of the log in order, so at any moment it is exactly the ACS at `offset`. Contracts
are indexed by stakeholder party and template id (what every query and stream names) and by
contract key; each row keeps its payload decoded for filtering and the JSON text that answers
with it. All methods are synchronous: a caller that reads the store and subscribes to the feed
in one step (no `await` between) gets a snapshot and exactly the transactions after it.

Equality queries on a top-level field of a large party-and-template bucket (INDEX_MIN_ROWS
contracts or more) are answered from a hash index of that field, built on first use and kept
current by every transaction after; smaller buckets are scanned.

Memory is bounded by `max_resident` (0: no bound): beyond that many contracts, the oldest ones
become cold (their payload and text are dropped, the index entries stay) and reads load them
from Redis when they need them. A bounded store scans instead of indexing fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import attrgetter
from typing import Any

from cairn.ledger.model import ContractRow
from cairn.ledger.store import LoggedTransaction

Predicate = Callable[[Any], bool]
_ORDER = attrgetter("offset", "contract_id")
INDEX_MIN_ROWS = 1_000  # buckets this large get field indexes for equality queries
# (party, template id) -> field -> value -> contract id -> row
FieldIndexes = dict[tuple[str, str], dict[str, dict[Any, dict[str, ContractRow]]]]


class QueryStore:
    def __init__(self, max_resident: int = 0) -> None:
        self.max_resident = max_resident
        self.offset = 0  # the last transaction applied; 0 before the first one
        self._rows: dict[str, ContractRow] = {}
        # party -> template id -> contract id -> row, each bucket in ledger order
        self._index: dict[str, dict[str, dict[str, ContractRow]]] = {}
        self._keys: dict[tuple[str, str], ContractRow] = {}
        self._fields: FieldIndexes = {}
        self._resident: deque[ContractRow] = deque()  # hot rows, oldest first (when bounded)
        self._hot = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def bounded(self) -> bool:
        """Whether rows may be cold (a memory bound is set)."""
        return self.max_resident > 0

    @property
    def hot(self) -> int:
        """Rows whose payload and text are in memory."""
        return self._hot if self.max_resident else len(self._rows)

    # ------------------------------------------------------------------ updates
    def load(self, rows: Iterable[ContractRow], offset: int) -> None:
        """Replace everything with `rows`, the ACS at `offset`. Call it with the cyclic garbage
        collector paused (`quiet_gc`) when loading many rows."""
        self._rows.clear()
        self._index.clear()
        self._keys.clear()
        self._fields.clear()
        self._resident.clear()
        self._hot = 0
        for row in sorted(rows, key=_ORDER):
            self._insert(row)
        self._evict()
        self._advance(offset)

    def apply(self, transaction: LoggedTransaction) -> tuple[ContractRow, ...]:
        """Apply the next transaction; returns its archived contracts as this store held
        them (hot rows when it had them)."""
        if transaction.offset != self.offset + 1:
            raise ValueError(f"transaction {transaction.offset} does not follow {self.offset}")
        archived = tuple(self._remove(row) for row in transaction.archived)
        for row in sorted(transaction.created, key=_ORDER):
            self._insert(row)
        self._evict()
        self._advance(transaction.offset)
        return archived

    def _insert(self, row: ContractRow) -> None:
        self._rows[row.contract_id] = row
        for party in row.parties:
            self._index.setdefault(party, {}).setdefault(row.template_id, {})[
                row.contract_id] = row
            for field, index in self._fields.get((party, row.template_id), {}).items():
                index.setdefault(row.payload.get(field), {})[row.contract_id] = row
        if row.key_slot is not None:
            self._keys[(row.template_id, row.key_slot)] = row
        if self.max_resident and row.payload is not None:
            self._resident.append(row)
            self._hot += 1

    def _remove(self, archived: ContractRow) -> ContractRow:
        row = self._rows.pop(archived.contract_id, None)
        if row is None:
            return archived
        for party in row.parties:
            by_template = self._index[party]
            bucket = by_template[row.template_id]
            del bucket[row.contract_id]
            for field, index in self._fields.get((party, row.template_id), {}).items():
                value = row.payload.get(field)
                index[value].pop(row.contract_id, None)
                if not index[value]:
                    del index[value]
            if not bucket:
                del by_template[row.template_id]
                self._fields.pop((party, row.template_id), None)
                if not by_template:
                    del self._index[party]
        if row.key_slot is not None and self._keys.get((row.template_id, row.key_slot)) is row:
            del self._keys[(row.template_id, row.key_slot)]
        if self.max_resident and row.payload is not None:
            self._hot -= 1
        return row if row.payload is not None else archived

    def _evict(self) -> None:
        """Drop the payloads of the oldest rows beyond `max_resident`."""
        if not self.max_resident:
            return
        while self._hot > self.max_resident:
            row = self._resident.popleft()
            if self._rows.get(row.contract_id) is row and row.payload is not None:
                row.payload = row.text = None
                self._hot -= 1
        if len(self._resident) > 2 * self._hot + 1024:  # archived rows pile up: compact
            self._resident = deque(r for r in self._resident
                                   if self._rows.get(r.contract_id) is r and r.payload is not None)

    def _advance(self, offset: int) -> None:
        self.offset = offset
        while self._waiters and self._waiters[0][0] <= offset:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ reads
    async def reached(self, offset: int) -> None:
        """Return once the store has applied `offset` (callers bound the wait)."""
        if self.offset >= offset:
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (offset, next(self._tiebreak), waiter))
        await waiter

    def get(self, contract_id: str) -> ContractRow | None:
        return self._rows.get(contract_id)

    def by_key(self, template_id: str, key_slot: str) -> ContractRow | None:
        return self._keys.get((template_id, key_slot))

    def visible(self, readers: Iterable[str],
                templates: Iterable[str] | None = None) -> list[ContractRow]:
        """The active contracts any of `readers` is a stakeholder of, of `templates` (None:
        every template), each once, oldest first."""
        buckets: list[Mapping[str, ContractRow]] = []
        for party in sorted(set(readers)):
            by_template = self._index.get(party)
            if by_template is None:
                continue
            if templates is None:
                buckets.extend(by_template.values())
            else:
                buckets.extend(by_template[t] for t in templates if t in by_template)
        if len(buckets) == 1:
            return list(buckets[0].values())
        merged: dict[str, ContractRow] = {}
        for bucket in buckets:
            merged.update(bucket)
        return sorted(merged.values(), key=_ORDER)

    def equal(self, readers: Iterable[str], template_id: str, field: str,
              value: Any) -> list[ContractRow]:
        """The active contracts of `template_id` any of `readers` is a stakeholder of whose
        top-level `field` is `value` (canonical), each once, oldest first."""
        found: list[Mapping[str, ContractRow]] = []
        for party in sorted(set(readers)):
            bucket = self._index.get(party, {}).get(template_id)
            if not bucket:
                continue
            if self.bounded or len(bucket) < INDEX_MIN_ROWS:
                found.append({cid: row for cid, row in bucket.items()
                              if row.payload is None or row.payload.get(field) == value})
                continue
            indexes = self._fields.setdefault((party, template_id), {})
            index = indexes.get(field)
            if index is None:
                index = indexes[field] = {}
                # One dict per value: allocate them without collections rescanning the heap.
                with quiet_gc(freeze=False):
                    for cid, row in bucket.items():
                        index.setdefault(row.payload.get(field), {})[cid] = row
            found.append(index.get(value, {}))
        if len(found) == 1:
            return list(found[0].values())
        merged: dict[str, ContractRow] = {}
        for rows in found:
            merged.update(rows)
        return sorted(merged.values(), key=_ORDER)


@contextlib.contextmanager
def quiet_gc(freeze: bool = True) -> Iterator[None]:
    """Pause the cyclic garbage collector while a bulk load allocates (each collection would
    rescan the growing heap); with `freeze`, then move what is alive to the permanent
    generation. The query store's rows are long-lived and acyclic (reference counting frees them
    when archived), so later collections need not scan them again; freezing is for loads at
    start, when little else is alive."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        if freeze:
            gc.freeze()
