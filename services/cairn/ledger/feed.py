"""The ledger feed: keeps this replica's query store current and fans transactions out to streams.

One task per process follows the log. Pub/sub is the low-latency path: every commit publishes its
log entry, and an entry that follows the last applied offset is applied at once. The log fills
every gap: at start, after a lost connection (Redis restarted, a network blip) and whenever a
published offset skips ahead, the feed reads the missing transactions from the log before it
goes on, so the query store and every open stream see each transaction exactly once, in order,
across reconnects. Only when the log no longer holds what is missing (pruned meanwhile, or Redis
lost its data) is the query store rebuilt from the ACS, and open streams end with an error that
tells the client to resume.

Reads are consistent with commits on every replica (`consistent`): they read the ledger end from
Redis and wait until the query store has applied it, so a query made after a command's response
(from any replica) reflects that command.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog

from cairn.ledger import metrics
from cairn.ledger.model import ContractRow
from cairn.ledger.querystore import QueryStore, quiet_gc
from cairn.ledger.store import HistoryPruned, LedgerStore, LoggedTransaction, parse_entry
from cairn.runtime import redis as redis_connection
from cairn.runtime.errors import Unavailable

log = structlog.get_logger()

LOG_BATCH = 500  # log entries read per round trip
SCAN_BATCH = 2000  # ACS entries read per round trip while rebuilding
MAX_BACKLOG = 10_000  # transactions a stream may have waiting before it counts as too slow
POLL_SECONDS = 0.1  # how often the feed looks for a poke while pub/sub is quiet
POKE_AFTER_SECONDS = 0.2  # a read waiting this long makes the feed read the log itself
SYNC_SECONDS = 1.0  # pub/sub quiet this long: compare with the ledger end
RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0)  # reconnect delays; the last one repeats
# Redis connections the feed and the streams may hold at once (the feed's subscription keeps
# one): a burst of streams opening together waits for a connection instead of exhausting Redis's
# client limit.
FEED_REDIS_CONNECTIONS = 32
REDIS_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class FeedLost:
    """The feed could not deliver every transaction to a subscriber; its stream must end."""

    reason: str


class Subscription:
    """One stream's view of the feed: every transaction after `start`, in order."""

    def __init__(self, start: int) -> None:
        self.start = start
        self._queue: asyncio.Queue[LoggedTransaction | FeedLost] = asyncio.Queue()
        self.lost = False

    def deliver(self, item: LoggedTransaction | FeedLost) -> None:
        if self.lost:
            return
        if isinstance(item, FeedLost) or self._queue.qsize() >= MAX_BACKLOG:
            self.lost = True
            if not isinstance(item, FeedLost):
                metrics.SLOW_STREAMS_DROPPED.inc()
                item = FeedLost("the client reads the stream too slowly")
        self._queue.put_nowait(item)

    async def next(self) -> LoggedTransaction | FeedLost:
        return await self._queue.get()


@dataclass(frozen=True)
class Retention:
    """How long the log keeps transactions (each 0 for no limit) and how often it is pruned."""

    max_transactions: int = 100_000
    max_age_seconds: float = 0.0
    prune_interval_seconds: float = 60.0


class LedgerFeed:
    def __init__(self, redis: aioredis.Redis, store: LedgerStore, query_store: QueryStore,
                 *, retention: Retention | None = None,
                 consistency_timeout: float = 10.0) -> None:
        self._redis = redis  # for the pub/sub connection
        self._store = store
        self.query_store = query_store
        self._retention = retention or Retention()
        self._timeout = consistency_timeout
        self._subscribers: set[Subscription] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._live = asyncio.Event()
        self._poked = False
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Build the query store from Redis and follow the log; returns once live."""
        await self._rebuild()
        self._tasks = [asyncio.create_task(self._run(), name="ledger-feed")]
        if self._retention.max_transactions or self._retention.max_age_seconds:
            self._tasks.append(asyncio.create_task(self._prune(), name="ledger-log-pruner"))
        try:
            await asyncio.wait_for(self._live.wait(), self._timeout)
        except TimeoutError:
            await self.close()
            raise RuntimeError(f"could not follow the ledger's log ({self._store.channel}) in "
                               f"{self._timeout:.0f}s") from None

    async def close(self) -> None:
        # The follower also checks this between polls: its pub/sub read runs under a 0.1 s
        # timeout, and a cancellation that lands as that timeout fires can be taken for the
        # timeout and lost (asyncio.timeout, Python 3.11), which kept the process from exiting.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._fail_all("the ledger service is stopping")

    async def probe(self) -> None:
        """Readiness: raises while the feed is not following the log (Redis unreachable)."""
        if not self._live.is_set():
            raise Unavailable("the ledger's query store is not following the log")

    # ------------------------------------------------------------------ readers
    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """Every transaction after the query store's current offset. Read the store and
        subscribe in one step (no `await` between) to get a snapshot and what follows it."""
        subscription = Subscription(self.query_store.offset)
        self._subscribers.add(subscription)
        metrics.STREAM_SUBSCRIBERS.inc()
        try:
            yield subscription
        finally:
            metrics.STREAM_SUBSCRIBERS.dec()
            self._subscribers.discard(subscription)

    async def caught_up(self, offset: int) -> None:
        """Wait until the query store has applied `offset`; Unavailable after the timeout."""
        store = self.query_store
        if store.offset >= offset:
            return
        try:
            await asyncio.wait_for(store.reached(offset), POKE_AFTER_SECONDS)
            return
        except TimeoutError:
            self._poked = True  # pub/sub is slow or lost a message: read the log directly
        try:
            await asyncio.wait_for(store.reached(offset), self._timeout - POKE_AFTER_SECONDS)
        except TimeoutError:
            raise Unavailable(f"The ledger's query store is behind (at offset {store.offset}, "
                              f"waiting for {offset}); retry shortly") from None

    async def consistent(self) -> int:
        """Read the ledger end and wait until the query store has it: a read after this
        reflects every command answered before it started, on any replica."""
        end = int(await self._store.ledger_end() or 0)
        await self.caught_up(end)
        return end

    async def hot(self, rows: list[ContractRow]) -> list[ContractRow]:
        """`rows` with cold ones (beyond the query store's memory bound) loaded from Redis;
        those archived since are left out, so a read reflects a later state, never an
        earlier one."""
        if not self.query_store.bounded:
            return rows
        cold = [row.contract_id for row in rows if row.payload is None]
        if not cold:
            return rows
        loaded = await self._store.contract_rows(cold)
        return [row if row.payload is not None else loaded[row.contract_id]
                for row in rows if row.payload is not None or row.contract_id in loaded]

    # ------------------------------------------------------------------ following the log
    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # Redis went away: keep the state, catch up on return
                self._live.clear()
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("ledger_feed_interrupted", error=repr(err), retry_in=delay)
                await asyncio.sleep(delay)
            else:
                failures = 0

    async def _follow(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._store.channel)
            await self._catch_up()  # what was committed before the subscription took effect
            if not self._live.is_set():
                log.info("ledger_feed_live", offset=self.query_store.offset)
            self._live.set()
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            while not self._closing:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=POLL_SECONDS)
                if message is not None and message.get("type") == "message":
                    quiet_since = loop.time()
                    transaction = parse_entry(message["data"])
                    if transaction.offset > self.query_store.offset + 1:
                        await self._catch_up()  # a gap: the log has what pub/sub skipped
                    if transaction.offset == self.query_store.offset + 1:
                        self._apply(transaction)
                elif self._poked or loop.time() - quiet_since >= SYNC_SECONDS:
                    # A client library may reconnect a subscription silently, dropping what
                    # was published meanwhile: when pub/sub is quiet, compare with the ledger
                    # end now and then.
                    self._poked = False
                    quiet_since = loop.time()
                    if int(await self._store.ledger_end() or 0) != self.query_store.offset:
                        await self._catch_up()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _catch_up(self) -> None:
        """Apply everything the log has after the query store's offset."""
        while True:
            try:
                batch = await self._store.read_log(self.query_store.offset, LOG_BATCH)
            except HistoryPruned:
                await self._rebuild("the log was pruned past this replica's position")
                continue
            for transaction in batch:
                self._apply(transaction)
            if len(batch) < LOG_BATCH:
                break
        end = int(await self._store.ledger_end() or 0)
        if end < self.query_store.offset:  # Redis lost data (restarted without persistence)
            await self._rebuild(f"the ledger end went back from {self.query_store.offset} "
                                f"to {end}")

    def _apply(self, transaction: LoggedTransaction) -> None:
        archived = self.query_store.apply(transaction)
        metrics.END_OFFSET.set(self.query_store.offset)
        if not self._subscribers:
            return
        delivered = dataclasses.replace(transaction, archived=archived)
        for subscription in list(self._subscribers):
            subscription.deliver(delivered)

    async def _rebuild(self, reason: str | None = None) -> None:
        """Load the ACS from Redis into the query store. A rebuild after the start breaks the
        continuity every open stream relies on, so they end (and may resume)."""
        started = time.perf_counter()
        with quiet_gc():
            rows, offset = await self._load_acs()
            self.query_store.load(rows.values(), offset)
        if reason is not None:
            log.warning("ledger_query_store_rebuilt", reason=reason, offset=offset)
            self._fail_all(f"{reason}; resume the stream from your last offset")
        log.info("ledger_query_store_loaded", contracts=len(rows), offset=offset,
                 seconds=round(time.perf_counter() - started, 3))

    async def _load_acs(self) -> tuple[dict[str, ContractRow], int]:
        """The ACS and its offset, from a scan of the ACS hash and the log since it began."""
        while True:
            begin = int(await self._store.ledger_end() or 0)
            rows: dict[str, ContractRow] = {}
            cursor = 0
            while True:
                cursor, batch = await self._store.scan_active(cursor, SCAN_BATCH)
                rows.update((row.contract_id, row) for row in batch)
                if cursor == 0:
                    break
            # The scan ran while commits went on: replaying the log since `begin` over it
            # yields exactly the ACS at the last replayed offset.
            offset = begin
            try:
                while True:
                    batch_log = await self._store.read_log(offset, LOG_BATCH)
                    for transaction in batch_log:
                        for archived in transaction.archived:
                            rows.pop(archived.contract_id, None)
                        rows.update((row.contract_id, row) for row in transaction.created)
                        offset = transaction.offset
                    if len(batch_log) < LOG_BATCH:
                        break
            except HistoryPruned:
                continue  # pruned during the scan (a tiny retention): scan again
            return rows, offset

    def _fail_all(self, reason: str) -> None:
        for subscription in list(self._subscribers):
            subscription.deliver(FeedLost(reason))
        self._subscribers.clear()

    async def _prune(self) -> None:
        retention = self._retention
        while True:
            await asyncio.sleep(retention.prune_interval_seconds)
            try:
                pruned = await self._store.prune(retention.max_transactions,
                                                 retention.max_age_seconds)
            except Exception as err:  # Redis away: the next round tries again
                log.warning("ledger_log_prune_failed", error=repr(err))
            else:
                log.debug("ledger_log_pruned", pruned_offset=pruned)


def feed_redis(url: redis_connection.RedisTarget | str, timeout_seconds: float = 5.0
               ) -> aioredis.Redis:
    """A Redis client for the feed and the streams, with a bounded, waiting connection pool (so
    they can be closed after the gRPC server drained, while their connections still work)."""
    return redis_connection.connect(url, timeout_seconds=timeout_seconds,
                                    max_connections=FEED_REDIS_CONNECTIONS,
                                    wait_seconds=REDIS_WAIT_SECONDS)
