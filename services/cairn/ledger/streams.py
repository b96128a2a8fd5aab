"""The DAML JSON API's WebSocket streams, `/v1/stream/query` and `/v1/stream/fetch`.

A plain HTTP/1.1 WebSocket server (the `websockets` package) that runs inside the ledger process on
its own port (`CAIRN_LEDGER_WS_PORT`); Envoy routes `/v1/stream/` to it with the transcoder, the Lua
shaper and ext_authz switched off, so the stream authenticates itself: the client must offer the
subprotocols `daml.ws.auth` and `jwt.token.<JWT>`, the JWT is checked with the ledger's
`LedgerTokenPolicy`, and a missing or bad token refuses the upgrade with HTTP 401 and the JSON API's
error body.

Protocol (../shared/research/daml.md §3g): the client sends one request, optionally preceded by
`{"offset": "<offset>"}`. The server answers with the active contracts matching it (blocks of
`{"events":[{"created":…,"matchedQueries":[…]}]}` without an offset), then the live marker
`{"events":[],"offset":<ledger end or null>}`, then one block per relevant transaction with the
offset after it, and `{"events":[],"offset":…}` heartbeats when nothing was sent for
`CAIRN_LEDGER_WS_HEARTBEAT_SECONDS`. Unknown template ids are reported first as
`{"warnings":{"unknownTemplateIds":[…]}}`; a bad request, or a second one, gets one
`{"status":400,"errors":[…]}` frame and the socket closes.

Events come from the store's pub/sub channel: one `TransactionFeed` per process subscribes once,
reads the created contracts of each commit once and fans the transaction out to every open stream.
The initial snapshot is made consistent with the feed by subscribing first and replaying the
commits that raced with the snapshot (see `_initial_state`).

The ledger keeps no transaction history, so a stream can resume only at the current ledger end;
an older offset is answered as the JSON API answers a pruned one (410 "Query offset has been
pruned").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import redis.asyncio as aioredis
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cairn.auth.ledger_jwt import LedgerClaims, LedgerTokenPolicy
from cairn.ledger.codec import CodecError
from cairn.ledger.lf.ast import Identifier, TCon
from cairn.ledger.lf.errors import EngineError
from cairn.ledger.model import StoredContract, key_hash
from cairn.ledger.packages import PackageRegistry, parse_template_ref, template_id_text
from cairn.ledger.query import compile_query
from cairn.ledger.service import require_readers
from cairn.ledger.store import LedgerStore
from cairn.runtime.errors import (
    ErrorStyle,
    InvalidRequest,
    NotFound,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

DEFAULT_WS_PORT = 50055
DEFAULT_HEARTBEAT_SECONDS = 5.0  # the JSON API's default heartbeatPeriod
QUERY_PATH = "/v1/stream/query"
FETCH_PATH = "/v1/stream/fetch"
AUTH_SUBPROTOCOL = "daml.ws.auth"
TOKEN_PREFIX = "jwt.token."
MISSING_SUBPROTOCOL = (f"Missing required {TOKEN_PREFIX}[token] or {AUTH_SUBPROTOCOL} "
                       f"subprotocol")
MULTIPLE_REQUESTS = "Multiple requests over the same WebSocket connection are not allowed."
ACS_BLOCK_SIZE = 500  # contracts per initial-snapshot message
# Transactions a stream may have waiting before it counts as too slow and is closed.
MAX_BACKLOG = 10_000
# How long a new stream waits for the commits that raced with its snapshot to reach the feed.
CATCH_UP_SECONDS = 10.0
FEED_RETRY_SECONDS = 0.5
CONTRACT_READ_BATCH = 64  # concurrent GETs when the feed loads a commit's created contracts
CLOSE_NORMAL, CLOSE_INTERNAL = 1000, 1011
PING_SECONDS = 20.0
# Redis connections the streams may hold at once (the feed keeps one): a burst of streams opening
# together waits for a connection instead of exhausting Redis's client limit.
STREAM_REDIS_CONNECTIONS = 32
REDIS_WAIT_SECONDS = 10.0
_QUERY_FIELDS = {"templateIds", "query", "offset"}
_FETCH_FIELDS = {"templateId", "key", "contractIdAtOffset"}

log = structlog.get_logger()


class OffsetPruned(ServiceError):
    """The requested offset lies before the ledger end; the ledger cannot replay history."""

    http_status = 410

    def __init__(self) -> None:
        super().__init__("Query offset has been pruned")


@dataclass(frozen=True)
class StreamSettings:
    """The stream server's settings, from the environment.

    | variable | default | meaning |
    |---|---|---|
    | `CAIRN_LEDGER_WS_PORT` | the gRPC port + 1 (`50055`) | port of the WebSocket server |
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


# ---------------------------------------------------------------------- the transaction feed
@dataclass(frozen=True)
class LedgerTransaction:
    """One commit as streams see it: created contracts still readable, archived (id, template)."""

    offset: str
    created: tuple[StoredContract, ...]
    archived: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FeedLost:
    """The feed could not deliver every commit to a subscriber; its stream must end."""

    reason: str


class Subscription:
    """One stream's view of the feed: the transactions committed since it subscribed."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[LedgerTransaction | FeedLost] = asyncio.Queue()
        self.lost = False

    def deliver(self, item: LedgerTransaction | FeedLost) -> None:
        if self.lost:
            return
        if isinstance(item, FeedLost) or self._queue.qsize() >= MAX_BACKLOG:
            self.lost = True
            item = item if isinstance(item, FeedLost) else FeedLost(
                "the client reads the stream too slowly")
        self._queue.put_nowait(item)

    async def next(self) -> LedgerTransaction | FeedLost:
        return await self._queue.get()


def _parse_event(raw: bytes | str) -> tuple[str, list[str], list[tuple[str, str]]]:
    event = json.loads(raw)
    archived = [(str(cid), str(tid)) for cid, tid in event.get("archived", [])]
    return str(event["offset"]), [str(c) for c in event.get("created", [])], archived


class TransactionFeed:
    """Reads the ledger's commit channel once per process and fans commits out to streams."""

    def __init__(self, redis: aioredis.Redis, store: LedgerStore) -> None:
        self._redis = redis
        self._store = store
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Begin reading; returns once the channel subscription is active."""
        self._task = asyncio.create_task(self._run(), name="ledger-transaction-feed")
        try:
            await asyncio.wait_for(self._subscribed.wait(), CATCH_UP_SECONDS)
        except TimeoutError:
            await self.close()
            raise RuntimeError(f"could not subscribe to the ledger's commit channel "
                               f"{self._store.channel} in {CATCH_UP_SECONDS:.0f}s") from None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_all("the ledger service is stopping")

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        subscription = Subscription()
        if self._subscribed.is_set():
            self._subscribers.add(subscription)
        else:  # between a lost connection and the next subscribe, commits would go unseen
            subscription.deliver(FeedLost("the ledger's event feed is reconnecting"))
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def _fail_all(self, reason: str) -> None:
        for subscription in list(self._subscribers):
            subscription.deliver(FeedLost(reason))
        self._subscribers.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a lost Redis connection: streams cannot be trusted now
                log.warning("ledger_feed_interrupted", error=str(err))
                self._subscribed.clear()
                self._fail_all("the ledger's event feed was interrupted")
                await asyncio.sleep(FEED_RETRY_SECONDS)

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._store.channel)
            self._subscribed.set()
            last: int | None = None
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                offset, created_ids, archived = _parse_event(message["data"])
                if last is not None and int(offset) != last + 1:
                    # Commits take consecutive offsets; a gap means Redis dropped messages.
                    self._fail_all("the ledger's event feed skipped transactions")
                last = int(offset)
                if not self._subscribers:
                    continue
                created = await self._load(created_ids)
                transaction = LedgerTransaction(offset, created, tuple(archived))
                for subscription in list(self._subscribers):
                    subscription.deliver(transaction)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _load(self, contract_ids: list[str]) -> tuple[StoredContract, ...]:
        """The created contracts still active (one archived since is simply not shown)."""
        found: list[StoredContract] = []
        for start in range(0, len(contract_ids), CONTRACT_READ_BATCH):
            batch = contract_ids[start:start + CONTRACT_READ_BATCH]
            contracts = await asyncio.gather(*(self._store.contract(c) for c in batch))
            found += [c for c in contracts if c is not None]
        return tuple(found)


# ---------------------------------------------------------------------- requests
def parse_offset(raw: object) -> int:
    """An offset the client sent; offsets are decimal strings (zero-padded on the wire)."""
    if not isinstance(raw, str) or not raw.isdigit():
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
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("JSON parser error: the message is not UTF-8") from None
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as err:
        raise InvalidRequest(f"JSON parser error: {err.msg} at input index {err.pos} "
                             f"(line {err.lineno}, position {err.colno})") from None


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


# ---------------------------------------------------------------------- compiled streams
Matcher = Callable[[StoredContract], list[int] | None]


@dataclass
class CompiledStream:
    """What a request asks for, resolved against the loaded packages."""

    readers: frozenset[str]
    # The matched query indexes of a visible contract (query streams), [] for fetch streams,
    # or None when the contract does not belong on the stream.
    match: Matcher
    # Matches against the elements that start with a snapshot (they name the snapshot's
    # matchedQueries), and against those that resume (their contracts the client already has).
    fresh_match: Matcher
    resumed_match: Matcher
    # Reads the active contracts the stream starts with (those of elements that do not resume).
    snapshot: Callable[[], Awaitable[list[StoredContract]]]
    # Reads the active contracts the resuming elements already cover.
    resumed_snapshot: Callable[[], Awaitable[list[StoredContract]]]
    with_matched_queries: bool
    # The offsets resuming elements resume at; the ledger keeps no history, so each must be
    # the ledger end when the stream starts.
    offsets: frozenset[int]
    unknown_template_ids: list[str] = field(default_factory=list)
    known_ids: set[str] = field(default_factory=set)  # contract ids the client holds


class StreamCompiler:
    """Turns a parsed request into a `CompiledStream` (template ids, queries, keys)."""

    def __init__(self, packages: PackageRegistry, store: LedgerStore) -> None:
        self._packages = packages
        self._store = store

    async def _resolve(self, raw: object, unknown: list[str]) -> Identifier | None:
        """The template `raw` names; an unknown one is collected for the warnings frame."""
        ref = parse_template_ref(raw)
        found = await self._packages.resolve(ref)
        if found is None and str(ref) not in unknown:
            unknown.append(str(ref))
        return found

    async def query(self, claims: LedgerClaims, data: Any,
                    default_offset: int | None) -> CompiledStream:
        readers = require_readers(claims)
        elements = _elements(data)
        unknown: list[str] = []
        # Per element: its predicate per template id, and whether it resumes at an offset.
        compiled: list[tuple[dict[str, Callable[[Any], bool]], bool]] = []
        offsets: set[int] = set()
        for element in elements:
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
            if offset is not None:
                offsets.add(offset)
            predicates: dict[str, Callable[[Any], bool]] = {}
            for raw in templates:
                resolved = await self._resolve(raw, unknown)
                if resolved is None or template_id_text(resolved) in predicates:
                    continue
                predicates[template_id_text(resolved)] = compile_query(
                    self._packages.codec, TCon(resolved), query)
            compiled.append((predicates, offset is not None))
        if not any(predicates for predicates, _ in compiled):
            raise InvalidRequest("Cannot resolve any template ID from request")

        def matcher(resumed: bool | None) -> Matcher:
            """Matches against the resuming elements, the others, or (None) all of them."""
            def match(contract: StoredContract) -> list[int] | None:
                if not contract.visible_to(readers):
                    return None
                hits = [i for i, (predicates, resumes) in enumerate(compiled)
                        if resumed in (None, resumes) and contract.template_id in predicates
                        and predicates[contract.template_id](contract.payload)]
                return hits or None
            return match

        def templates_of(resumed: bool) -> list[str]:
            return sorted({t for predicates, resumes in compiled if resumes == resumed
                           for t in predicates})

        match_fresh, match_resumed = matcher(False), matcher(True)

        async def snapshot_of(resumed: bool) -> list[StoredContract]:
            templates = templates_of(resumed)
            if not templates:
                return []
            test = match_resumed if resumed else match_fresh
            by_template: dict[str, Callable[[Any], bool]] = {}
            for predicates, resumes in compiled:
                if resumes != resumed:
                    continue
                for template_id, predicate in predicates.items():
                    previous = by_template.get(template_id)
                    by_template[template_id] = (predicate if previous is None else
                                                _either(previous, predicate))
            contracts = await self._store.visible_contracts(
                readers, templates, where=lambda tid, payload: by_template[tid](payload))
            return [c for c in contracts if test(c) is not None]

        return CompiledStream(
            readers=readers,
            match=matcher(None),
            fresh_match=match_fresh,
            resumed_match=match_resumed,
            snapshot=lambda: snapshot_of(False),
            resumed_snapshot=lambda: snapshot_of(True),
            with_matched_queries=True,
            offsets=frozenset(offsets),
            unknown_template_ids=unknown,
        )

    async def fetch(self, claims: LedgerClaims, data: Any,
                    default_offset: int | None) -> CompiledStream:
        readers = require_readers(claims)
        if not isinstance(data, list) or not data:
            raise _reader_error(data, "must be a JSON array with at least 1 element")
        unknown: list[str] = []
        wanted: set[tuple[str, str]] = set()  # (template id, key slot)
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
                # Resuming is only possible at the ledger end, where the key holders the stream
                # reads are the contracts the client can hold; a claimed id adds nothing (and
                # must not make the stream report archives of contracts the party cannot see).
                cid = element["contractIdAtOffset"]
                if cid is not None and not isinstance(cid, str):
                    raise _reader_error(element, "contractIdAtOffset must be a string or null")
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

        def match(contract: StoredContract) -> list[int] | None:
            if ((contract.template_id, contract.key_slot) in wanted
                    and contract.visible_to(readers)):
                return []
            return None

        async def holders() -> list[StoredContract]:
            found: dict[str, StoredContract] = {}
            for template_id, slot in sorted(wanted):
                contract = await self._store.contract_by_key(template_id, slot)
                if contract is not None and match(contract) is not None:
                    found[contract.contract_id] = contract
            return list(found.values())

        async def nothing() -> list[StoredContract]:
            return []

        resumes = default_offset is not None
        return CompiledStream(
            readers=readers,
            match=match,
            fresh_match=(lambda _: None) if resumes else match,
            resumed_match=match if resumes else (lambda _: None),
            snapshot=nothing if resumes else holders,
            resumed_snapshot=holders if resumes else nothing,
            with_matched_queries=False,
            offsets=frozenset() if default_offset is None else frozenset({default_offset}),
            unknown_template_ids=unknown,
        )


def _either(first: Callable[[Any], bool], second: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda payload: first(payload) or second(payload)


# ---------------------------------------------------------------------- frames
def _frame(body: Mapping[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def error_frame(err: ServiceError) -> str:
    """`{"status":N,"errors":[...]}`, as the JSON API's synchronous endpoints answer."""
    return err.rest_body(ErrorStyle.LEDGER)


def created_event(contract: StoredContract, matched: list[int] | None,
                  with_matched_queries: bool) -> dict[str, Any]:
    event: dict[str, Any] = {"created": contract.to_json()}
    if with_matched_queries:
        event["matchedQueries"] = matched or []
    return event


def _padded(offset: int | None) -> str | None:
    return None if offset is None else str(offset).zfill(20)


# ---------------------------------------------------------------------- the server
class StreamServer:
    """The WebSocket endpoint: authenticates upgrades and runs one stream per connection."""

    def __init__(self, packages: PackageRegistry, store: LedgerStore, feed: TransactionFeed,
                 policy: LedgerTokenPolicy, settings: StreamSettings) -> None:
        self._compiler = StreamCompiler(packages, store)
        self._store = store
        self._feed = feed
        self._policy = policy
        self._settings = settings
        self._server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the stream server is not started"
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1])

    async def start(self, host: str) -> None:
        self._server = await serve(
            self._handle, host, self._settings.port,
            process_request=self._check_upgrade,
            subprotocols=[AUTH_SUBPROTOCOL],  # type: ignore[list-item]
            # Contract payloads can be large; the JSON API's own frames have no fixed cap.
            max_size=64 << 20,
            # Protocol pings besides the JSON offset ticks: they find dead clients, and they keep
            # a stream that has no offset to tick yet (empty ledger) from looking idle to Envoy.
            ping_interval=PING_SECONDS,
            ping_timeout=PING_SECONDS,
        )

    async def close(self) -> None:
        """Stop accepting, close open streams with 1001 (going away) and wait for them."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------------ the upgrade
    async def _claims(self, request: Request) -> LedgerClaims:
        offered = [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol")
                   for p in value.split(",")]
        tokens = [p[len(TOKEN_PREFIX):] for p in offered if p.startswith(TOKEN_PREFIX)]
        if AUTH_SUBPROTOCOL not in offered or not tokens or not tokens[0]:
            raise Unauthenticated(MISSING_SUBPROTOCOL)
        claims = await self._policy.verify(tokens[0])
        require_readers(claims)
        return claims

    async def _check_upgrade(self, connection: ServerConnection, request: Request
                             ) -> Response | None:
        path = request.path.split("?", 1)[0]
        try:
            if path not in (QUERY_PATH, FETCH_PATH):
                raise NotFound(f"GET, uri: {request.path}")
            await self._claims(request)
        except ServiceError as err:
            response = connection.respond(HTTPStatus(err.http_status), error_frame(err))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    # ------------------------------------------------------------------ one stream
    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        path = request.path.split("?", 1)[0]
        request_id = request.headers.get("x-request-id", "")
        logger = log.bind(stream=path, request_id=request_id)
        try:
            claims = await self._claims(request)
            stream = await self._read_request(ws, path, claims)
        except ServiceError as err:
            await _send_and_close(ws, error_frame(err), CLOSE_NORMAL)
            return
        except ConnectionClosed:
            return
        logger.info("stream_opened", unknown_template_ids=stream.unknown_template_ids)
        if stream.unknown_template_ids:
            await ws.send(_frame({"warnings": {"unknownTemplateIds":
                                               stream.unknown_template_ids}}))
        pump = asyncio.create_task(self._pump(ws, stream))
        guard = asyncio.create_task(_refuse_further_requests(ws))
        done, pending = await asyncio.wait({pump, guard}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            failure = task.exception()
            if failure is not None and not isinstance(failure, ConnectionClosed):
                logger.error("stream_failed", error=repr(failure))
                await _send_and_close(ws, error_frame(ServiceError()), CLOSE_INTERNAL)
        logger.info("stream_closed")

    async def _read_request(self, ws: ServerConnection, path: str,
                            claims: LedgerClaims) -> CompiledStream:
        data = parse_message(await ws.recv())
        default_offset = None
        if is_offset_message(data):
            default_offset = parse_offset(data["offset"])
            data = parse_message(await ws.recv())
            if is_offset_message(data):
                raise InvalidRequest("offset must be specified as a leading, separate object "
                                     "message")
        if path == QUERY_PATH:
            return await self._compiler.query(claims, data, default_offset)
        return await self._compiler.fetch(claims, data, default_offset)

    async def _pump(self, ws: ServerConnection, stream: CompiledStream) -> None:
        with self._feed.subscribe() as subscription:
            try:
                last = await self._initial_state(ws, stream, subscription)
            except ServiceError as err:
                await _send_and_close(ws, error_frame(err), CLOSE_NORMAL)
                return
            await self._live(ws, stream, subscription, last)

    async def _initial_state(self, ws: ServerConnection, stream: CompiledStream,
                             subscription: Subscription) -> int | None:
        """Send the snapshot and the live marker; returns the marker's offset.

        The feed subscription exists before anything is read. The snapshot is taken between
        two reads of the ledger end, `before` and `after`; commits in (before, after] may or may
        not be in it, so they are replayed onto it from the feed (creates the snapshot lacks are
        added if they still match, archives remove), which yields the state at `after` exactly.
        """
        before = _offset_number(await self._store.ledger_end())
        for offset in sorted(stream.offsets):
            if offset > (before or 0):
                raise InvalidRequest(f"Offset {_padded(offset)} is beyond the ledger end "
                                     f"{_padded(before) or '(empty ledger)'}")
            if offset < (before or 0):
                raise OffsetPruned()
        fresh = {c.contract_id: c for c in await stream.snapshot()}
        resumed = {c.contract_id for c in await stream.resumed_snapshot()}
        after = _offset_number(await self._store.ledger_end())
        if stream.offsets and after != before:
            raise OffsetPruned()  # the ledger moved past the offset while the stream started
        async for transaction in _transactions_up_to(subscription, before, after):
            for contract in transaction.created:
                if stream.fresh_match(contract) is not None:
                    fresh.setdefault(contract.contract_id, contract)
                if stream.resumed_match(contract) is not None:
                    resumed.add(contract.contract_id)
            for contract_id, _ in transaction.archived:
                fresh.pop(contract_id, None)
                resumed.discard(contract_id)
        contracts = list(fresh.values())
        for start in range(0, len(contracts), ACS_BLOCK_SIZE):
            events = [created_event(c, stream.fresh_match(c), stream.with_matched_queries)
                      for c in contracts[start:start + ACS_BLOCK_SIZE]]
            await ws.send(_frame({"events": events}))
        stream.known_ids |= set(fresh) | resumed
        await ws.send(_frame({"events": [], "offset": _padded(after)}))
        return after

    async def _live(self, ws: ServerConnection, stream: CompiledStream,
                    subscription: Subscription, last: int | None) -> None:
        loop = asyncio.get_running_loop()
        period = self._settings.heartbeat_seconds
        quiet_since = loop.time()
        while True:
            try:
                item = await asyncio.wait_for(subscription.next(),
                                              max(0.0, quiet_since + period - loop.time()))
            except TimeoutError:
                if last is not None:  # no tick before an offset is known
                    await ws.send(_frame({"events": [], "offset": _padded(last)}))
                quiet_since = loop.time()
                continue
            if isinstance(item, FeedLost):
                await _send_and_close(ws, error_frame(Unavailable(
                    f"The stream was interrupted ({item.reason}); open a new one")),
                    CLOSE_INTERNAL)
                return
            offset = int(item.offset)
            if last is not None and offset <= last:
                continue  # already part of the initial state
            last = offset
            events = self._events(stream, item)
            if events:
                await ws.send(_frame({"events": events, "offset": item.offset}))
                quiet_since = loop.time()

    @staticmethod
    def _events(stream: CompiledStream, transaction: LedgerTransaction) -> list[dict[str, Any]]:
        """The transaction's events for this stream: archives first (a key released by an
        archive may be taken by a create in the same block), never a transient contract."""
        created_ids = {c.contract_id for c in transaction.created}
        archived_ids = {cid for cid, _ in transaction.archived}
        events: list[dict[str, Any]] = []
        for contract_id, template_id in transaction.archived:
            # Only contracts the client was shown: no phantom archives, and no contract ids
            # leak to parties who never saw them.
            if contract_id in stream.known_ids and contract_id not in created_ids:
                stream.known_ids.discard(contract_id)
                events.append({"archived": {"contractId": contract_id,
                                            "templateId": template_id}})
        for contract in transaction.created:
            if contract.contract_id in archived_ids:
                continue
            matched = stream.match(contract)
            if matched is None:
                continue
            stream.known_ids.add(contract.contract_id)
            events.append(created_event(contract, matched, stream.with_matched_queries))
        return events


def _offset_number(offset: str | None) -> int | None:
    return None if offset is None else int(offset)


async def _transactions_up_to(subscription: Subscription, before: int | None,
                              after: int | None) -> AsyncIterator[LedgerTransaction]:
    """The feed's transactions with offsets in (before, after], waiting until all arrived."""
    if after is None or after == before:
        return
    floor = before or 0
    deadline = asyncio.get_running_loop().time() + CATCH_UP_SECONDS
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            item = await asyncio.wait_for(subscription.next(), max(0.0, remaining))
        except TimeoutError:
            raise Unavailable("The ledger's event feed is behind; open the stream again"
                              ) from None
        if isinstance(item, FeedLost):
            raise Unavailable(f"The stream was interrupted ({item.reason}); open a new one")
        offset = int(item.offset)
        if offset <= floor:
            continue
        yield item
        if offset >= after:
            return


async def _refuse_further_requests(ws: ServerConnection) -> None:
    """A stream serves one request: any later message gets the JSON API's error, then close."""
    async for _ in ws:
        await _send_and_close(ws, error_frame(InvalidRequest(MULTIPLE_REQUESTS)), CLOSE_NORMAL)
        return


async def _send_and_close(ws: ServerConnection, frame: str, code: int) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(frame)
        await ws.close(code)


def stream_redis(url: str) -> aioredis.Redis:
    """A Redis client for the streams, with a bounded, waiting connection pool."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=STREAM_REDIS_CONNECTIONS, timeout=REDIS_WAIT_SECONDS,
        health_check_interval=30)
    return aioredis.Redis(connection_pool=pool)


async def start_stream_server(host: str, settings: StreamSettings, redis: aioredis.Redis,
                              packages: PackageRegistry, policy: LedgerTokenPolicy
                              ) -> tuple[StreamServer, TransactionFeed]:
    """The feed and the WebSocket server, both running; close the server, then the feed."""
    store = LedgerStore(redis)
    feed = TransactionFeed(redis, store)
    await feed.start()
    server = StreamServer(packages, store, feed, policy, settings)
    try:
        await server.start(host)
    except BaseException:
        await feed.close()
        raise
    return server, feed
