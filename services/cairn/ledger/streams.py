"""The JSON API's query and fetch streams, independent of their transport.

`/v1/stream/query` and `/v1/stream/fetch` (WebSockets, `cairn.ledger.websocket`) and the native
gRPC `StreamQuery`/`StreamFetch` (`cairn.ledger.grpc_api`) parse the same requests and send the
same blocks, produced here by `LedgerStreams.run`:

1. `Warnings` when some template ids did not resolve;
2. the active contracts matching the elements that do not resume (`Events` without an offset, at
   most ACS_BLOCK_SIZE each): the query store's snapshot at its offset P;
3. for elements that resume at an offset: the transactions after it up to P, read from the log,
   one block per transaction with its offset;
4. the live marker: no events, offset P (null on an empty ledger);
5. live: one block per transaction with events for this stream, and heartbeat ticks (no events,
   the last offset) after a quiet period.

A contract is on the stream when an element matches it: visible to the reading parties, of the
element's template, its payload satisfying the element's query (query streams) or holding one of
the requested keys (fetch streams), and created after the element's offset (P for elements that
started with the snapshot). An archive is sent for exactly the contracts a created event was or
would have been sent for, so a client that applies the events to the contracts it held at its
offset ends with exactly the active contracts `/v1/query` returns, and never learns the id of a
contract it cannot see. The snapshot and the live part come from the query store and the feed in
one step, so no transaction is missed or sent twice at the handover.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from cairn.auth.ledger_jwt import LedgerClaims
from cairn.ledger.codec import CodecError
from cairn.ledger.feed import LOG_BATCH, FeedLost, LedgerFeed, Subscription
from cairn.ledger.lf.ast import Identifier, TCon
from cairn.ledger.lf.errors import EngineError
from cairn.ledger.model import ContractRow, key_hash
from cairn.ledger.packages import PackageRegistry, parse_template_ref, template_id_text
from cairn.ledger.query import Predicate, compile_query
from cairn.ledger.service import require_readers
from cairn.ledger.store import HistoryPruned, LedgerStore, LoggedTransaction, format_offset
from cairn.runtime import jsonbody
from cairn.runtime.errors import InvalidRequest, Unavailable

DEFAULT_WS_PORT = 20055
DEFAULT_HEARTBEAT_SECONDS = 5.0  # the JSON API's default heartbeatPeriod
ACS_BLOCK_SIZE = 500  # contracts per snapshot block
MULTIPLE_REQUESTS = "Multiple requests over the same WebSocket connection are not allowed."
PRUNED = "Query offset has been pruned"
_QUERY_FIELDS = {"templateIds", "query", "offset"}
_FETCH_FIELDS = {"templateId", "key", "contractIdAtOffset"}


class OffsetPruned(InvalidRequest):
    """The log no longer holds the transactions right after the requested offset."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, offset: int, pruned: int) -> None:
        super().__init__(f"{PRUNED}: offset {format_offset(offset)} is before the pruning "
                         f"offset {format_offset(pruned)}, the earliest a stream can resume "
                         f"from; open the stream without an offset to start from the active "
                         f"contracts")


class OffsetBeyondEnd(InvalidRequest):
    grpc_code = grpc.StatusCode.OUT_OF_RANGE


@dataclass(frozen=True)
class StreamSettings:
    """The stream server's settings, from the environment.

    | variable | default | meaning |
    |---|---|---|
    | `CAIRN_LEDGER_WS_PORT` | the gRPC port + 1 (`20055`) | port of the WebSocket server |
    | `CAIRN_LEDGER_WS_HEARTBEAT_SECONDS` | `5` | quiet time after which the offset is re-sent |
    """

    port: int = DEFAULT_WS_PORT
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 grpc_port: int = DEFAULT_WS_PORT - 1) -> StreamSettings:
        """From the environment; without `CAIRN_LEDGER_WS_PORT` the port after the ledger's
        gRPC port, so ledger processes side by side on one host (tests, replicas) never share
        one."""
        env = os.environ if env is None else env
        raw_port = env.get("CAIRN_LEDGER_WS_PORT") or str(grpc_port + 1)
        if not raw_port.isdigit() or not 0 <= int(raw_port) <= 65535:
            raise ValueError(f"CAIRN_LEDGER_WS_PORT must be a port (0-65535), got {raw_port!r}")
        raw_beat = env.get("CAIRN_LEDGER_WS_HEARTBEAT_SECONDS") or str(DEFAULT_HEARTBEAT_SECONDS)
        try:
            heartbeat = float(raw_beat)
        except ValueError:
            heartbeat = -1.0
        if not heartbeat > 0:
            raise ValueError(f"CAIRN_LEDGER_WS_HEARTBEAT_SECONDS must be a positive number of "
                             f"seconds, got {raw_beat!r}")
        return cls(int(raw_port), heartbeat)


# ---------------------------------------------------------------------- what streams send
@dataclass(frozen=True)
class Created:
    row: ContractRow
    matched_queries: list[int] | None  # None on fetch streams


@dataclass(frozen=True)
class Archived:
    contract_id: str
    template_id: str


Event = Created | Archived


@dataclass(frozen=True)
class Events:
    """A block of events; `offset` is absent (`has_offset` False) in snapshot blocks, and None
    in the live marker of an empty ledger."""

    events: list[Event]
    offset: str | None = None
    has_offset: bool = True


@dataclass(frozen=True)
class Warnings:
    unknown_template_ids: list[str]


Block = Events | Warnings


# ---------------------------------------------------------------------- requests
def parse_offset(raw: object) -> int:
    """An offset the client sent; offsets are decimal strings (zero-padded on the wire)."""
    if not isinstance(raw, str) or not raw.isdigit() or len(raw) > 20:
        raise InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(raw)}>. Cause: "
                             f"spray.json.DeserializationException: offset must be a string "
                             f"holding a ledger offset")
    return int(raw)


def _short(data: Any) -> str:
    text = json.dumps(data, default=str, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def _reader_error(data: Any, cause: str) -> InvalidRequest:
    return InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(data)}>. Cause: "
                          f"spray.json.DeserializationException: {cause}")


def parse_message(text: str | bytes) -> Any:
    """A client frame as JSON with exact decimals; 400 in the JSON API's words otherwise."""
    return jsonbody.parse_request(text, "JSON parser error: ", exact=True)


def is_offset_message(data: Any) -> bool:
    """The optional leading `{"offset": ...}` message: an object with that key alone."""
    return isinstance(data, dict) and set(data) == {"offset"}


def _elements(data: Any) -> list[Any]:
    """A request's elements: one object or a non-empty array of them."""
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and data:
        return data
    raise _reader_error(data, "must be a JSON object or a JSON array with at least 1 element")


@dataclass
class QueryElement:
    """One element of a query stream: its queries per template id, and its offset (None: it
    starts with the snapshot)."""

    predicates: dict[str, Predicate]
    offset: int | None
    since: int = 0  # what it follows transactions after: its offset, or the snapshot's


@dataclass
class CompiledStream:
    """A request resolved against the loaded packages: what is on the stream."""

    readers: frozenset[str]
    templates: list[str]  # every template id the stream follows
    # Query streams: one per element. Fetch streams: one element, no predicates (keys below).
    elements: list[QueryElement]
    keys: frozenset[tuple[str, str]] = frozenset()  # fetch streams: (template id, key slot)
    with_matched_queries: bool = True
    unknown_template_ids: list[str] = field(default_factory=list)
    # Fetch streams resuming with every contractIdAtOffset: archives are reported only for
    # these contracts and those created on the stream (the JSON API's guarantee).
    archive_filter: set[str] | None = None

    @property
    def resumes_from(self) -> int | None:
        """The earliest offset an element resumes at."""
        offsets = [e.offset for e in self.elements if e.offset is not None]
        return min(offsets) if offsets else None

    @property
    def has_snapshot(self) -> bool:
        return any(e.offset is None for e in self.elements)

    def begin(self, start: int) -> None:
        """Fix the snapshot's offset, which elements without their own offset follow."""
        for element in self.elements:
            element.since = start if element.offset is None else element.offset

    def matches(self, row: ContractRow, offset: int) -> list[int]:
        """The elements `row`, created (or archived) at `offset`, belongs to."""
        if not row.visible_to(self.readers):
            return []
        if self.keys:
            wanted = (row.template_id, row.key_slot) in self.keys
            return [0] if wanted and offset > self.elements[0].since else []
        template_id, payload = row.template_id, row.payload
        return [i for i, e in enumerate(self.elements)
                if offset > e.since and (p := e.predicates.get(template_id)) and p(payload)]

    def snapshot_matches(self, row: ContractRow) -> list[int]:
        """The elements without an offset that active contract `row` belongs to."""
        if not row.visible_to(self.readers):
            return []
        if self.keys:
            return [0] if (row.template_id, row.key_slot) in self.keys else []
        template_id, payload = row.template_id, row.payload
        return [i for i, e in enumerate(self.elements)
                if e.offset is None and (p := e.predicates.get(template_id)) and p(payload)]

    def events(self, transaction: LoggedTransaction) -> list[Event]:
        """The transaction's events for this stream: archives first (a key released by an
        archive may be taken by a create of the same transaction)."""
        offset = transaction.offset
        events: list[Event] = []
        for row in transaction.archived:
            # An archived contract belongs to an element iff its create did (the create's
            # offset is before this one, so the archive's offset stands in for it).
            if not self.matches(row, offset):
                continue
            if self.archive_filter is not None:
                if row.contract_id not in self.archive_filter:
                    continue
                self.archive_filter.discard(row.contract_id)
            events.append(Archived(row.contract_id, row.template_id))
        for row in transaction.created:
            hits = self.matches(row, offset)
            if not hits:
                continue
            if self.archive_filter is not None:
                self.archive_filter.add(row.contract_id)
            events.append(Created(row, hits if self.with_matched_queries else None))
        return events


class StreamCompiler:
    """Turns a parsed request into a `CompiledStream` (template ids, queries, keys)."""

    def __init__(self, packages: PackageRegistry) -> None:
        self._packages = packages

    async def _resolve(self, raw: object, unknown: list[str]) -> Identifier | None:
        """The template `raw` names; an unknown one is collected for the warnings block."""
        ref = parse_template_ref(raw)
        found = await self._packages.resolve(ref)
        if found is None and str(ref) not in unknown:
            unknown.append(str(ref))
        return found

    async def query(self, claims: LedgerClaims, data: Any,
                    default_offset: int | None) -> CompiledStream:
        readers = require_readers(claims)
        unknown: list[str] = []
        elements: list[QueryElement] = []
        for element in _elements(data):
            if not isinstance(element, dict):
                raise _reader_error(element, "each query must be a JSON object")
            extra = sorted(set(element) - _QUERY_FIELDS)
            if extra:
                raise _reader_error(element, f"unsupported query fields {extra}; likely should "
                                             f"be within 'query' subobject")
            templates = element.get("templateIds")
            if not isinstance(templates, list):
                raise _reader_error(element, "templateIds must be a JSON array")
            if not templates:
                raise _reader_error(element, "search requires at least one item in "
                                             "'templateIds'")
            query = element.get("query")
            if query is not None and not isinstance(query, dict):
                raise _reader_error(element, "query must be a JSON object")
            offset = (parse_offset(element["offset"]) if "offset" in element
                      else default_offset)
            predicates: dict[str, Predicate] = {}
            for raw in templates:
                resolved = await self._resolve(raw, unknown)
                if resolved is None or template_id_text(resolved) in predicates:
                    continue
                predicates[template_id_text(resolved)] = compile_query(
                    self._packages.codec, TCon(resolved), query).predicate
            elements.append(QueryElement(predicates, offset))
        if not any(e.predicates for e in elements):
            raise InvalidRequest("Cannot resolve any template ID from request")
        templates = sorted({t for e in elements for t in e.predicates})
        return CompiledStream(readers, templates, elements, unknown_template_ids=unknown)

    async def fetch(self, claims: LedgerClaims, data: Any,
                    default_offset: int | None) -> CompiledStream:
        readers = require_readers(claims)
        if not isinstance(data, list) or not data:
            raise _reader_error(data, "must be a JSON array with at least 1 element")
        unknown: list[str] = []
        wanted: set[tuple[str, str]] = set()
        at_offset: set[str] | None = set()
        for element in data:
            if not isinstance(element, dict):
                raise _reader_error(element, "each fetch request must be a JSON object")
            extra = sorted(set(element) - _FETCH_FIELDS)
            if extra:
                raise _reader_error(element, f"unsupported fetch fields {extra}")
            if "templateId" not in element or "key" not in element:
                raise _reader_error(element, "a fetch request requires templateId and key")
            if "contractIdAtOffset" in element:
                if default_offset is None:
                    raise InvalidRequest("contractIdAtOffset is not allowed for WebSocket "
                                         "streams starting at the beginning")
                cid = element["contractIdAtOffset"]
                if cid is not None and not isinstance(cid, str):
                    raise _reader_error(element, "contractIdAtOffset must be a string or null")
                if at_offset is not None and cid is not None:
                    at_offset.add(cid)
            else:
                at_offset = None  # one is missing: archives are not filtered by them
            resolved = await self._resolve(element["templateId"], unknown)
            if resolved is None:
                continue
            template_id = template_id_text(resolved)
            try:
                key_type = self._packages.engine.key_type(resolved)
            except EngineError:
                raise InvalidRequest(f"Cannot resolve Template Key type, given: "
                                     f"{template_id}") from None
            try:
                key_value = self._packages.codec.decode(key_type, element["key"])
            except CodecError as err:
                raise InvalidRequest(str(err)) from None
            wanted.add((template_id, key_hash(template_id, key_value)))
        if not wanted:
            raise InvalidRequest("Cannot resolve any template ID from request")
        return CompiledStream(
            readers, sorted({t for t, _ in wanted}), [QueryElement({}, default_offset)],
            keys=frozenset(wanted), with_matched_queries=False, unknown_template_ids=unknown,
            archive_filter=at_offset if default_offset is not None else None)


# ---------------------------------------------------------------------- running a stream
class LedgerStreams:
    """Runs compiled streams against this replica's query store, feed and log."""

    def __init__(self, packages: PackageRegistry, store: LedgerStore, feed: LedgerFeed,
                 heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS) -> None:
        self.compiler = StreamCompiler(packages)
        self._store = store
        self._feed = feed
        self.heartbeat_seconds = heartbeat_seconds

    async def run(self, stream: CompiledStream) -> AsyncIterator[Block]:
        """The stream's blocks, forever (until the consumer stops). Request errors are raised
        before the first events block; a feed that loses continuity raises Unavailable."""
        if stream.unknown_template_ids:
            yield Warnings(stream.unknown_template_ids)
        end = await self._feed.consistent()
        resume = stream.resumes_from
        for element in stream.elements:
            if element.offset is not None and element.offset > end:
                raise OffsetBeyondEnd(f"Offset {format_offset(element.offset)} is beyond the "
                                      f"ledger end {format_offset(end) if end else '(empty)'}")
        if resume is not None:
            pruned = await self._store.pruned_offset()
            if resume < pruned:
                raise OffsetPruned(resume, pruned)
        query_store = self._feed.query_store
        with self._feed.subscribe() as subscription:
            # The snapshot and the subscription are taken in one step: the snapshot is the
            # ACS at `start`, the subscription delivers every transaction after it.
            start = subscription.start
            stream.begin(start)
            candidates: list[ContractRow] = []
            if stream.has_snapshot and stream.keys:
                holders = (query_store.by_key(*key) for key in stream.keys)
                candidates = sorted((r for r in holders if r is not None),
                                    key=lambda r: (r.offset, r.contract_id))
            elif stream.has_snapshot:
                candidates = query_store.visible(stream.readers, stream.templates)
            snapshot = [Created(row, hits if stream.with_matched_queries else None)
                        for row in await self._feed.hot(candidates)
                        if (hits := stream.snapshot_matches(row))]
            if stream.archive_filter is not None:
                stream.archive_filter.update(c.row.contract_id for c in snapshot)
            for first in range(0, len(snapshot), ACS_BLOCK_SIZE):
                block: list[Event] = list(snapshot[first:first + ACS_BLOCK_SIZE])
                yield Events(block, has_offset=False)
            if resume is not None:
                async for events in self._replay(stream, resume, start):
                    yield events
            yield Events([], format_offset(start) if start else None)
            async for events in self._live(stream, subscription, start):
                yield events

    async def _replay(self, stream: CompiledStream, after: int,
                      until: int) -> AsyncIterator[Events]:
        """The log's transactions in (after, until] as blocks for this stream."""
        while after < until:
            try:
                batch = await self._store.read_log(after, min(LOG_BATCH, until - after))
            except HistoryPruned as pruned:
                raise OffsetPruned(after, pruned.pruned) from None
            if not batch:
                raise Unavailable("The ledger's log ends before its ledger end; retry")
            for transaction in batch:
                events = stream.events(transaction)
                if events:
                    yield Events(events, transaction.offset_text)
                after = transaction.offset

    async def _live(self, stream: CompiledStream, subscription: Subscription,
                    start: int) -> AsyncIterator[Events]:
        loop = asyncio.get_running_loop()
        period = self.heartbeat_seconds
        last = start
        quiet_since = loop.time()
        while True:
            try:
                item = await asyncio.wait_for(subscription.next(),
                                              max(0.0, quiet_since + period - loop.time()))
            except TimeoutError:
                if last:  # no tick before an offset is known
                    yield Events([], format_offset(last))
                quiet_since = loop.time()
                continue
            if isinstance(item, FeedLost):
                raise Unavailable(f"The stream was interrupted ({item.reason}); resume it "
                                  f"from the last offset received")
            last = item.offset
            events = stream.events(item)
            if events:
                yield Events(events, item.offset_text)
                quiet_since = loop.time()


def created_json(event: Created) -> str:
    """`{"created":<active contract>,"matchedQueries":[...]}` from the stored text."""
    if event.matched_queries is None:
        return '{"created":' + event.row.json + "}"
    return ('{"created":' + event.row.json + ',"matchedQueries":['
            + ",".join(map(str, event.matched_queries)) + "]}")


def block_json(block: Block) -> str:
    """A block as the JSON API's WebSocket frame."""
    if isinstance(block, Warnings):
        return json.dumps({"warnings": {"unknownTemplateIds": block.unknown_template_ids}},
                          ensure_ascii=False, separators=(",", ":"))
    events: Sequence[str] = [
        created_json(e) if isinstance(e, Created) else json.dumps(
            {"archived": {"contractId": e.contract_id, "templateId": e.template_id}},
            ensure_ascii=False, separators=(",", ":"))
        for e in block.events]
    text = '{"events":[' + ",".join(events) + "]"
    if block.has_offset:
        text += ',"offset":' + json.dumps(block.offset)
    return text + "}"

