"""Ledger use cases: create, exercise, create-and-exercise, fetch, query, parties and packages,
with the JSON API's rules.

Commands are interpreted by the engine against the packages in this process (a small command on
the event loop, anything else in a worker thread, reading contracts and keys through
`RedisLedgerView`) and committed to Redis in one atomic step
(`LedgerStore.commit`), which re-checks what the command relied on and appends the transaction to
the log. Reads answer from this replica's query store (`QueryStore`, kept current by the
`LedgerFeed`) once it has caught up with the ledger end, so they reflect every command answered
before them on any replica. Reads are scoped to the reading parties: a contract is visible to its
stakeholders. Error texts follow the JSON API (see ../shared/research/daml.md §3d).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cairn.auth.ledger_jwt import LedgerClaims
from cairn.blobstore.port import BlobReader
from cairn.ledger.codec import CodecError, decode_party
from cairn.ledger.feed import LedgerFeed
from cairn.ledger.lf.ast import Choice, Identifier, TCon
from cairn.ledger.lf.dar import Dar
from cairn.ledger.lf.engine import Contract, Transaction
from cairn.ledger.lf.errors import (
    ContractKeyNotFound,
    ContractNotActive,
    ContractNotFound,
    DuplicateContractKey,
    EngineError,
    EvaluationLimitExceeded,
)
from cairn.ledger.lf.interp import CreatedEvent, ExercisedEvent
from cairn.ledger.model import (
    NO_META,
    ArchivedContract,
    CommandMeta,
    Commit,
    ContractRow,
    Deduplication,
    Party,
    StoredContract,
    TransactionEvent,
    key_hash,
    key_slot,
)
from cairn.ledger.packages import (
    PackageRegistry,
    TemplateRef,
    parse_template_ref,
    template_id_text,
)
from cairn.ledger.query import always, compile_query
from cairn.ledger.store import CommitRejected, LedgerStore
from cairn.ledger.view import LedgerReadNeeded, RedisLedgerView
from cairn.runtime.errors import (
    AlreadyExists,
    Conflict,
    ErrorStyle,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    quote,
)

T = TypeVar("T")

_PARTY_HINT = re.compile(r"[a-zA-Z0-9:\-_ ]{1,255}")
# A command is interpreted on the event loop when its payload is this small (JSON values, and
# nesting depth) and the engine needs at most `inline_max_calls` function calls for it: handing
# a small command to a worker thread (a thread wake-up, then a loop wake-up with the result, and
# the GIL passed back and forth) costs more CPU than interpreting it.
INLINE_MAX_VALUES = 256
INLINE_MAX_DEPTH = 16
# The longest the loop stalls for a command that then goes to a worker thread after all: 400
# calls of the compute-bound InefficientFibonacci choice take 5 ms (an Iou create makes 22).
DEFAULT_INLINE_MAX_CALLS = 400
_DUPLICATE_COMMAND = ("DUPLICATE_COMMAND: A command with the given command id has already "
                      "been successfully processed")


class UnresolvedTemplates(InvalidRequest):
    """No template id of the request resolved; the error body also lists them as warnings."""

    def __init__(self, unknown: list[str]) -> None:
        super().__init__("Cannot resolve any template ID from request")
        self.unknown = unknown

    def rest_body(self, style: ErrorStyle) -> str:
        return json.dumps({"status": self.http_status, "errors": list(self.messages),
                           "warnings": {"unknownTemplateIds": self.unknown}},
                          ensure_ascii=True, separators=(",", ":"))


def engine_failure(err: EngineError) -> ServiceError:
    """The JSON API status of an engine error, with its ledger error id in the text."""
    text = f"{err.code}: {err.message}"
    if isinstance(err, DuplicateContractKey):
        return AlreadyExists(text)
    if isinstance(err, ContractNotFound | ContractNotActive | ContractKeyNotFound):
        return NotFound(text)
    return InvalidRequest(text)


def require_command_claims(claims: LedgerClaims) -> None:
    if not claims.ledger_id:
        raise Unauthenticated("ledgerId missing in access token")
    if not claims.application_id:
        raise Unauthenticated("applicationId missing in access token")
    if not claims.act_as:
        raise Unauthenticated("Expected one or more parties in actAs but got none")


@dataclass(frozen=True)
class Submission:
    """A command's submitting parties (`meta.actAs`/`meta.readAs`, else the token's), command
    id and deduplication period."""

    act_as: tuple[str, ...]
    read_as: tuple[str, ...]
    command_id: str
    submission_id: str | None
    deduplication: Deduplication


def submitting_parties(claims: LedgerClaims, meta: CommandMeta
                       ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """actAs and readAs of a command; each must be granted by the token (acting implies
    reading)."""
    require_command_claims(claims)
    act_as = claims.act_as if meta.act_as is None else meta.act_as
    read_as = claims.read_as if meta.read_as is None else meta.read_as
    for party in act_as:
        if party not in claims.act_as:
            raise PermissionDenied(f"PERMISSION_DENIED: Claims do not authorize to act as "
                                   f"party '{party}'")
    for party in read_as:
        if party not in claims.readers:
            raise PermissionDenied(f"PERMISSION_DENIED: Claims do not authorize to read data "
                                   f"for party '{party}'")
    return tuple(dict.fromkeys(act_as)), tuple(dict.fromkeys(read_as))


def small_json(value: Any, max_values: int = INLINE_MAX_VALUES,
               max_depth: int = INLINE_MAX_DEPTH) -> bool:
    """Whether `value` (parsed JSON) has at most `max_values` values nested at most
    `max_depth` deep; stops counting as soon as it has more."""
    pending = [(value, 1)]
    count = 0
    while pending:
        item, depth = pending.pop()
        count += 1
        if count > max_values or depth > max_depth:
            return False
        if isinstance(item, dict):
            pending.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            pending.extend((v, depth + 1) for v in item)
    return True


def require_readers(claims: LedgerClaims) -> frozenset[str]:
    if not claims.ledger_id:
        raise Unauthenticated("ledgerId missing in access token")
    readers = claims.readers
    if not readers:
        raise Unauthenticated("Expected one or more parties in actAs or readAs but got none")
    return readers


@dataclass(frozen=True)
class Created:
    contract: StoredContract
    completion_offset: str


@dataclass(frozen=True)
class Exercised:
    """The outcome of an exercise command, as the JSON API reports it."""

    exercise_result: Any  # the choice's return value, LF JSON
    events: list[TransactionEvent]  # created and archived contracts in ledger order
    completion_offset: str


@dataclass(frozen=True)
class _Interpreted:
    """A transaction with everything the commit and the reply need, rendered off the loop."""

    transaction: Transaction
    created: tuple[StoredContract, ...]
    archived: tuple[StoredContract, ...]
    events: list[TransactionEvent]
    result: Any


@dataclass(frozen=True)
class QueryResult:
    contracts: list[ContractRow]
    unknown_template_ids: list[str]


class LedgerService:
    def __init__(self, store: LedgerStore, packages: PackageRegistry, feed: LedgerFeed,
                 inline_max_calls: int = DEFAULT_INLINE_MAX_CALLS) -> None:
        self._store = store
        self._packages = packages
        self._feed = feed
        self._inline_max_calls = inline_max_calls  # 0: every command in a worker thread

    async def _run_engine(self, work: Callable[[int | None], T], small: bool) -> T:
        """`work(max_calls)`: interpretation, CPU-bound. A `small` command runs on the event
        loop under the inline call budget; any other, or one that needs more calls or a ledger
        read not made ahead (`RedisLedgerView.prefetch`), runs in a worker thread with the
        engine's own budget, so the loop stays free for other calls and health checks meanwhile
        (nothing is committed before this returns, so running a command again is safe)."""
        if small and self._inline_max_calls:
            try:
                return work(self._inline_max_calls)
            except (EvaluationLimitExceeded, LedgerReadNeeded):
                pass  # more than the loop should carry: run again below, in a worker thread
        return await asyncio.to_thread(work, None)

    # ------------------------------------------------------------------ helpers
    async def _template(self, raw: object) -> Identifier:
        ref = parse_template_ref(raw)
        found = await self._packages.resolve(ref)
        if found is None:
            raise InvalidRequest.for_field("templateId",
                                           f"Cannot resolve template ID, given: {ref}")
        return found

    async def _exercise_target(self, raw: object) -> tuple[Identifier, bool]:
        """The template, or else the interface, an exercise names; (id, is an interface)."""
        ref = parse_template_ref(raw)
        found = await self._packages.resolve(ref)  # refreshes the packages on a miss
        if found is not None:
            return found, False
        interface_id = self._lookup_interface(ref)
        if interface_id is None:
            raise InvalidRequest.for_field("templateId",
                                           f"Cannot resolve template ID, given: {ref}")
        return interface_id, True

    async def _interface(self, raw: object) -> Identifier:
        """An interface id as a client wrote it (`choiceInterfaceId`)."""
        ref = parse_template_ref(raw)
        found = self._lookup_interface(ref)
        if found is None:
            # It may come from a package another replica uploaded meanwhile.
            await self._packages.refresh()
            found = self._lookup_interface(ref)
        if found is None:
            raise InvalidRequest.for_field("choiceInterfaceId",
                                           f"Cannot resolve interface ID, given: {ref}")
        return found

    def _lookup_interface(self, ref: TemplateRef) -> Identifier | None:
        packages = self._packages.engine.packages
        if ref.package_id is not None:
            ident = Identifier(ref.package_id, ref.module, ref.entity)
            return ident if packages.find_interface(ident) is not None else None
        # Like template ids: a bare `Module:Entity` must name exactly one loaded interface.
        owners = [i for i in packages.interface_ids()
                  if i.module == ref.module and i.name == ref.entity]
        return owners[0] if len(owners) == 1 else None

    def _stored(self, contract: Contract) -> StoredContract:
        codec = self._packages.codec
        template_id = template_id_text(contract.template_id)
        key_json = None
        if contract.has_key:
            key_type = self._packages.engine.key_type(contract.template_id)
            key_json = codec.encode(key_type, contract.key)
        return StoredContract(
            contract_id=contract.contract_id,
            template_id=template_id,
            payload=codec.encode(TCon(contract.template_id), contract.argument),
            signatories=contract.signatories,
            observers=contract.observers,
            agreement_text=contract.agreement_text,
            has_key=contract.has_key,
            key=key_json,
            key_slot=key_hash(template_id, contract.key) if contract.has_key else None,
        )

    def _submission(self, claims: LedgerClaims, meta: CommandMeta) -> Submission:
        """Check a command's meta against the token and the ledger's limits."""
        act_as, read_as = submitting_parties(claims, meta)
        period = meta.deduplication or Deduplication()
        maximum = self._store.max_deduplication_ms
        if period.window_ms is not None and period.window_ms > maximum:
            raise InvalidRequest(
                f"INVALID_DEDUPLICATION_PERIOD: The submitted command had an invalid "
                f"deduplication period: the deduplication duration of {period.window_ms} ms "
                f"exceeds the maximum deduplication duration of {maximum} ms")
        return Submission(act_as, read_as, meta.command_id or str(uuid.uuid4()),
                          meta.submission_id, period)

    async def _commit(self, claims: LedgerClaims, submission: Submission,
                      transaction: Transaction, created: tuple[StoredContract, ...],
                      archived: tuple[StoredContract, ...] = ()) -> str:
        """Commit `transaction`, whose contracts in their stored form are `created` and
        `archived`; returns its offset."""
        commit = Commit(
            created=created,
            archived=archived,
            inputs=tuple(transaction.input_contracts),
            key_expectations=tuple(
                (template_id_text(template), key_slot(template_id_text(template), canonical),
                 seen)
                for (template, canonical), seen in transaction.key_lookups.items()
            ),
            command=(claims.application_id, submission.act_as, submission.command_id),
            deduplication=submission.deduplication,
            submission_id=submission.submission_id,
        )
        try:
            return (await self._store.commit(commit)).offset
        except CommitRejected as rejected:
            if rejected.reason == "key-taken":
                raise AlreadyExists(f"DUPLICATE_CONTRACT_KEY: Duplicate contract key for "
                                    f"template {rejected.detail}") from None
            if rejected.reason == "duplicate-command":
                raise Conflict(_DUPLICATE_COMMAND) from None
            if rejected.reason == "inactive":
                raise Conflict(f"INCONSISTENT: contract {rejected.detail} was archived while "
                               f"the command was interpreted; retry it") from None
            raise Conflict(f"INCONSISTENT: the ledger changed while the command was "
                           f"interpreted ({rejected.reason}); retry it") from None

    # ------------------------------------------------------------------ commands
    async def create(self, claims: LedgerClaims, template: object, payload: Any,
                     meta: CommandMeta = NO_META) -> Created:
        submission = self._submission(claims, meta)
        template_id = await self._template(template)

        def interpret(max_calls: int | None) -> Transaction:
            argument = self._packages.codec.decode(TCon(template_id), payload)
            return self._packages.engine.create(
                template_id, argument, act_as=submission.act_as, read_as=submission.read_as,
                max_calls=max_calls)

        transaction = await self._interpret(interpret, small_json(payload))
        created = tuple(self._stored(c) for c in transaction.created)  # just the one
        offset = await self._commit(claims, submission, transaction, created)
        return Created(created[0], offset)

    def _resolve_choice(self, template_id: Identifier, choice: object,
                        choice_interface_id: Identifier | None = None
                        ) -> tuple[Identifier | None, Choice]:
        if not isinstance(choice, str) or not choice:
            raise InvalidRequest.for_field("choice", "choice must be a non-empty string")
        try:
            return self._packages.engine.resolve_choice(template_id, choice, choice_interface_id)
        except EngineError as err:
            # An unknown or ambiguous choice is a bad request, not a ledger failure.
            raise InvalidRequest.for_field("choice", str(err)) from None

    def _render(self, transaction: Transaction, return_type: Any) -> _Interpreted:
        """The stored forms, the JSON API events and the encoded result of a transaction.

        Events are the transaction tree in pre-order without fetches: a created contract where
        it is created, and an archived one where a consuming choice is exercised on it.
        """
        stored: dict[str, StoredContract] = {}

        def store_form(contract: Contract) -> StoredContract:
            if contract.contract_id not in stored:
                stored[contract.contract_id] = self._stored(contract)
            return stored[contract.contract_id]

        events: list[TransactionEvent] = []
        for event in transaction.events():
            if isinstance(event, CreatedEvent):
                events.append(store_form(event.contract))
            elif isinstance(event, ExercisedEvent) and event.consuming:
                events.append(ArchivedContract(event.contract_id,
                                               template_id_text(event.template_id)))
        return _Interpreted(
            transaction=transaction,
            created=tuple(store_form(c) for c in transaction.created),
            archived=tuple(store_form(c) for c in transaction.archived),
            events=events,
            result=self._packages.codec.encode(return_type, transaction.result),
        )

    async def _interpret(self, work: Callable[[int | None], T], small: bool) -> T:
        """Run `work` (`_run_engine`), mapping its errors."""
        try:
            return await self._run_engine(work, small)
        except CodecError as err:
            raise InvalidRequest(str(err)) from None
        except EngineError as err:
            raise engine_failure(err) from None

    async def exercise(self, claims: LedgerClaims, template: object, choice: object,
                       argument: Any, *, contract_id: object = None, by_key: bool = False,
                       key: Any = None, choice_interface: object = None,
                       meta: CommandMeta = NO_META) -> Exercised:
        """Exercise `choice` on the contract with `contract_id`, or (`by_key`) on the active
        contract of `template` whose key is `key`."""
        submission = self._submission(claims, meta)
        template_id, is_interface = await self._exercise_target(template)
        interface_id = None
        if choice_interface is not None:
            interface_id = await self._interface(choice_interface)
        if not by_key and (not isinstance(contract_id, str) or not contract_id):
            raise InvalidRequest.for_field("contractId", "contractId must be a non-empty string")
        if by_key and is_interface:
            raise InvalidRequest.for_field(
                "templateId", f"Exercise by key needs a template ID, given the interface "
                              f"{template_id_text(template_id)}")
        through, choice_def = self._resolve_choice(template_id, choice, interface_id)
        if by_key and through is not None:
            raise InvalidRequest(f"Exercise by key of a choice inherited from interface "
                                 f"{template_id_text(through)} is not supported; exercise it by "
                                 f"contract id")
        engine, codec = self._packages.engine, self._packages.codec
        view = RedisLedgerView(self._store, codec, asyncio.get_running_loop())
        choice_name = choice_def.name
        small = small_json(argument)
        if by_key:
            small = False  # its first step is a key lookup: a worker thread at once
        else:
            assert isinstance(contract_id, str)
            # The engine's first read, made here so that a small exercise need not leave the
            # loop; its payload counts towards the inline size, as the engine decodes it.
            target = await view.prefetch(contract_id)
            small = small and (target is None or small_json(target.payload))

        def interpret(max_calls: int | None) -> _Interpreted:
            choice_argument = codec.decode(choice_def.arg_type, argument)
            if by_key:
                try:
                    key_type = engine.key_type(template_id)
                except EngineError:
                    raise InvalidRequest(f"Cannot resolve Template Key type, given: "
                                         f"{template_id_text(template_id)}") from None
                transaction = engine.exercise_by_key(
                    template_id, codec.decode(key_type, key), choice_name, choice_argument,
                    act_as=submission.act_as, read_as=submission.read_as, ledger=view,
                    max_calls=max_calls)
            else:
                assert isinstance(contract_id, str)
                transaction = engine.exercise(
                    contract_id, choice_name, choice_argument, act_as=submission.act_as,
                    read_as=submission.read_as, ledger=view,
                    # Through an interface the contract may be of any implementing template.
                    template_id=None if is_interface else template_id, interface_id=through,
                    max_calls=max_calls)
            return self._render(transaction, choice_def.return_type)

        interpreted = await self._interpret(interpret, small)
        offset = await self._commit(claims, submission, interpreted.transaction,
                                    interpreted.created, interpreted.archived)
        return Exercised(interpreted.result, interpreted.events, offset)

    async def create_and_exercise(self, claims: LedgerClaims, template: object, payload: Any,
                                  choice: object, argument: Any,
                                  meta: CommandMeta = NO_META) -> Exercised:
        """Create a contract and exercise `choice` on it in one transaction."""
        submission = self._submission(claims, meta)
        template_id = await self._template(template)
        through, choice_def = self._resolve_choice(template_id, choice)
        if through is not None:
            raise InvalidRequest(f"Create-and-exercise of a choice inherited from interface "
                                 f"{template_id_text(through)} is not supported; create the "
                                 f"contract, then exercise it by contract id")
        engine, codec = self._packages.engine, self._packages.codec
        view = RedisLedgerView(self._store, codec, asyncio.get_running_loop())

        def interpret(max_calls: int | None) -> _Interpreted:
            create_argument = codec.decode(TCon(template_id), payload)
            choice_argument = codec.decode(choice_def.arg_type, argument)
            transaction = engine.create_and_exercise(
                template_id, create_argument, choice_def.name, choice_argument,
                act_as=submission.act_as, read_as=submission.read_as, ledger=view,
                max_calls=max_calls)
            return self._render(transaction, choice_def.return_type)

        interpreted = await self._interpret(interpret, small_json([payload, argument]))
        offset = await self._commit(claims, submission, interpreted.transaction,
                                    interpreted.created, interpreted.archived)
        return Exercised(interpreted.result, interpreted.events, offset)

    # ------------------------------------------------------------------ reads
    async def _consistent(self) -> None:
        """Wait until the query store has every transaction committed before this read."""
        await self._feed.caught_up(int(await self._store.ledger_end() or 0))

    async def fetch_by_id(self, claims: LedgerClaims, contract_id: object,
                          template: object | None = None) -> ContractRow | None:
        readers = require_readers(claims)
        if not isinstance(contract_id, str) or not contract_id:
            raise InvalidRequest.for_field("contractId", "contractId must be a non-empty string")
        wanted = None if template is None else template_id_text(await self._template(template))
        await self._consistent()
        row = self._feed.query_store.get(contract_id)
        if row is None or not row.visible_to(readers):
            return None
        if wanted is not None and row.template_id != wanted:
            return None
        return next(iter(await self._feed.hot([row])), None)

    async def fetch_by_key(self, claims: LedgerClaims, template: object,
                           key: Any) -> ContractRow | None:
        readers = require_readers(claims)
        template_id = await self._template(template)
        try:
            key_type = self._packages.engine.key_type(template_id)
        except EngineError:
            raise InvalidRequest(f"Cannot resolve Template Key type, given: "
                                 f"{template_id_text(template_id)}") from None
        try:
            key_value = self._packages.codec.decode(key_type, key)
        except CodecError as err:
            raise InvalidRequest(str(err)) from None
        text = template_id_text(template_id)
        await self._consistent()
        row = self._feed.query_store.by_key(text, key_hash(text, key_value))
        if row is None or not row.visible_to(readers):
            return None
        return next(iter(await self._feed.hot([row])), None)

    async def query(self, claims: LedgerClaims, templates: list[object],
                    query: Any) -> QueryResult:
        readers = require_readers(claims)
        if not templates:
            raise InvalidRequest("JsonReaderError. Cannot read JSON: templateIds. Cause: "
                                 "search requires at least one item in 'templateIds'")
        resolved: list[Identifier] = []
        unknown: list[str] = []
        for raw in templates:
            ref = parse_template_ref(raw)
            found = await self._packages.resolve(ref)
            if found is None:
                unknown.append(str(ref))
            elif found not in resolved:
                resolved.append(found)
        if not resolved:
            raise UnresolvedTemplates(unknown)
        codec = self._packages.codec
        queries = {template_id_text(t): compile_query(codec, TCon(t), query) for t in resolved}
        await self._consistent()
        store = self._feed.query_store
        matching: list[ContractRow] = []
        for template_id, compiled in queries.items():
            if compiled.equalities:  # an index answers one equality, the predicate the rest
                field, value = compiled.equalities[0]
                candidates = store.equal(readers, template_id, field, value)
            else:
                candidates = store.visible(readers, [template_id])
            rows = await self._feed.hot(candidates)
            predicate = compiled.predicate
            matching += (rows if predicate is always
                         else [r for r in rows if predicate(r.payload)])
        if len(queries) > 1:
            matching.sort(key=lambda r: (r.offset, r.contract_id))
        return QueryResult(matching, unknown)

    async def query_all(self, claims: LedgerClaims) -> list[ContractRow]:
        readers = require_readers(claims)
        await self._consistent()
        return await self._feed.hot(self._feed.query_store.visible(readers))

    # ------------------------------------------------------------------ parties
    async def parties(self) -> list[Party]:
        return await self._store.parties()

    async def parties_by_id(self, identifiers: list[object]) -> tuple[list[Party], list[str]]:
        if not identifiers:
            raise InvalidRequest("JsonReaderError. Cannot read JSON: <[]>. Cause: "
                                 "spray.json.DeserializationException: must be a JSON array "
                                 "with at least 1 element")
        wanted: list[str] = []
        for raw in identifiers:
            try:
                party = decode_party(raw)
            except CodecError as err:
                raise InvalidRequest(str(err)) from None
            if party not in wanted:
                wanted.append(party)
        found = await self._store.parties_by_id(wanted)
        return [found[p] for p in wanted if p in found], [p for p in wanted if p not in found]

    async def allocate_party(self, hint: str | None, display_name: str | None) -> Party:
        if hint is not None and not _PARTY_HINT.fullmatch(hint):
            raise InvalidRequest.for_field(
                "identifierHint", f"Invalid party identifier hint {quote(hint)!r}: use 1 to 255 "
                                  f"letters, digits and the characters : - _ and space")
        party = Party(hint or f"party-{uuid.uuid4().hex}", display_name)
        if not await self._store.allocate_party(party):
            raise InvalidRequest(f"Party already exists: {party.identifier}")
        return party

    # ------------------------------------------------------------------ packages
    async def upload_dar(self, data: bytes) -> Dar:
        return await self._packages.upload(data)

    async def package_ids(self) -> list[str]:
        return await self._packages.package_ids()

    async def open_dalf(self, package_id: str) -> BlobReader:
        """The DALF payload of a package, for streaming; NotFound for an unknown id."""
        return await self._packages.open_dalf(package_id)
