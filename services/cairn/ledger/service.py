"""Ledger use cases: create, fetch, query, parties and packages, with the JSON API's rules.

Commands are interpreted by the engine against the packages in this process and committed to
Redis in one atomic step (`LedgerStore.commit`), which re-checks what the command relied on.
Reads are scoped to the parties of the caller's token: a contract is visible to its stakeholders.
Error texts follow the JSON API (see ../shared/research/daml.md §3d).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from cairn.auth.ledger_jwt import LedgerClaims
from cairn.blobstore.port import BlobReader
from cairn.ledger.codec import CodecError, decode_party
from cairn.ledger.lf.ast import Identifier, TCon
from cairn.ledger.lf.dar import Dar
from cairn.ledger.lf.engine import Contract, Transaction
from cairn.ledger.lf.errors import (
    ContractKeyNotFound,
    ContractNotActive,
    ContractNotFound,
    DuplicateContractKey,
    EngineError,
)
from cairn.ledger.model import Commit, Party, StoredContract, key_hash, key_slot
from cairn.ledger.packages import PackageRegistry, parse_template_ref, template_id_text
from cairn.ledger.query import compile_query
from cairn.ledger.store import CommitRejected, LedgerStore
from cairn.runtime.errors import (
    AlreadyExists,
    Conflict,
    ErrorStyle,
    InvalidRequest,
    NotFound,
    ServiceError,
    Unauthenticated,
)

_PARTY_HINT = re.compile(r"[a-zA-Z0-9:\-_ ]{1,255}")
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
class QueryResult:
    contracts: list[StoredContract]
    unknown_template_ids: list[str]


class LedgerService:
    def __init__(self, store: LedgerStore, packages: PackageRegistry) -> None:
        self._store = store
        self._packages = packages

    # ------------------------------------------------------------------ helpers
    async def _template(self, raw: object) -> Identifier:
        ref = parse_template_ref(raw)
        found = await self._packages.resolve(ref)
        if found is None:
            raise InvalidRequest(f"Cannot resolve template ID, given: {ref}")
        return found

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

    async def _commit(self, claims: LedgerClaims, transaction: Transaction,
                      command_id: str) -> str:
        commit = Commit(
            created=tuple(self._stored(c) for c in transaction.created),
            archived=tuple(self._stored(c) for c in transaction.archived),
            inputs=tuple(transaction.input_contracts),
            key_expectations=tuple(
                (template_id_text(template), key_slot(template_id_text(template), canonical),
                 seen)
                for (template, canonical), seen in transaction.key_lookups.items()
            ),
            command=(claims.application_id, claims.act_as, command_id),
        )
        try:
            return (await self._store.commit(commit)).offset
        except CommitRejected as rejected:
            if rejected.reason == "key-taken":
                raise AlreadyExists(f"DUPLICATE_CONTRACT_KEY: Duplicate contract key for "
                                    f"template {rejected.detail}") from None
            if rejected.reason == "duplicate-command":
                raise Conflict(_DUPLICATE_COMMAND) from None
            raise Conflict(f"INCONSISTENT: the ledger changed while the command was "
                           f"interpreted ({rejected.reason}); retry it") from None

    # ------------------------------------------------------------------ commands
    async def create(self, claims: LedgerClaims, template: object, payload: Any,
                     command_id: str | None) -> Created:
        require_command_claims(claims)
        template_id = await self._template(template)

        def interpret() -> Transaction:
            argument = self._packages.codec.decode(TCon(template_id), payload)
            return self._packages.engine.create(
                template_id, argument, act_as=claims.act_as, read_as=claims.read_as)

        try:
            # Interpretation is CPU-bound and may run long (the engine bounds it by a call
            # budget): keep the event loop free for other calls and health checks meanwhile.
            transaction = await asyncio.to_thread(interpret)
        except CodecError as err:
            raise InvalidRequest(str(err)) from None
        except EngineError as err:
            raise engine_failure(err) from None
        offset = await self._commit(claims, transaction, command_id or str(uuid.uuid4()))
        created = self._stored(transaction.created[0])
        return Created(created, offset)

    # ------------------------------------------------------------------ reads
    async def fetch_by_id(self, claims: LedgerClaims, contract_id: object,
                          template: object | None = None) -> StoredContract | None:
        readers = require_readers(claims)
        if not isinstance(contract_id, str) or not contract_id:
            raise InvalidRequest("contractId must be a non-empty string")
        wanted = None if template is None else template_id_text(await self._template(template))
        contract = await self._store.contract(contract_id)
        if contract is None or not contract.visible_to(readers):
            return None
        if wanted is not None and contract.template_id != wanted:
            return None
        return contract

    async def fetch_by_key(self, claims: LedgerClaims, template: object,
                           key: Any) -> StoredContract | None:
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
        contract = await self._store.contract_by_key(text, key_hash(text, key_value))
        if contract is None or not contract.visible_to(readers):
            return None
        return contract

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
        predicates = {template_id_text(t): compile_query(codec, TCon(t), query)
                      for t in resolved}
        matching = await self._store.visible_contracts(
            readers, list(predicates),
            where=lambda template_id, payload: predicates[template_id](payload))
        return QueryResult(matching, unknown)

    async def query_all(self, claims: LedgerClaims) -> list[StoredContract]:
        return await self._store.visible_contracts(require_readers(claims))

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
            raise InvalidRequest(f"Invalid party identifier hint {hint!r}: use 1 to 255 letters, "
                                 f"digits and the characters : - _ and space")
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
