"""The ledger's records: active contracts (already JSON-encoded), parties, and the events a
transaction reports.

Contracts are kept as the JSON API's active contract object, rendered once when they are created
(`StoredContract.to_text`), so reads need no engine and send stored text as it is. The contract-key
index is addressed by a digest of the engine's canonical form of the key value (`value_key`), the
same form the engine compares keys by, so the JSON spelling of a key (`"300000"` or `300000.0`)
never matters.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from cairn.ledger.lf.value import value_key


def key_slot(template_id: str, canonical_key: Any) -> str:
    """The contract-key index slot for a key in the engine's canonical form (`value_key`)."""
    # value_key is a tuple tree of str/int/bool; its repr is the same in every process.
    return hashlib.sha256(f"{template_id}\n{canonical_key!r}".encode()).hexdigest()


def key_hash(template_id: str, key: Any) -> str:
    """The contract-key index slot of an LF key value under a fully qualified template id."""
    return key_slot(template_id, value_key(key))


@dataclass(frozen=True)
class StoredContract:
    """An active contract as stored in Redis and shown by the JSON API."""

    contract_id: str
    template_id: str  # `<package id>:<module>:<entity>`
    payload: Any  # LF JSON of the contract argument
    signatories: tuple[str, ...]
    observers: tuple[str, ...]
    agreement_text: str = ""
    has_key: bool = False
    key: Any = None  # LF JSON of the key when `has_key`
    key_slot: str | None = None  # key_hash of the key value when `has_key`

    @property
    def stakeholders(self) -> frozenset[str]:
        return frozenset(self.signatories) | frozenset(self.observers)

    def visible_to(self, parties: frozenset[str]) -> bool:
        return not self.stakeholders.isdisjoint(parties)

    def to_json(self) -> dict[str, Any]:
        """The JSON API's active contract object (`key` only for keyed templates)."""
        body: dict[str, Any] = {
            "observers": list(self.observers),
            "agreementText": self.agreement_text,
            "payload": self.payload,
            "signatories": list(self.signatories),
        }
        if self.has_key:
            body["key"] = self.key
        body["contractId"] = self.contract_id
        body["templateId"] = self.template_id
        return body

    def to_text(self) -> str:
        """`to_json` as compact JSON: the stored form, and exactly what clients receive."""
        return self._text

    @functools.cached_property
    def _text(self) -> str:
        # Rendered once: the commit stores it and a create's reply is spliced from it.
        return compact(self.to_json())

    @classmethod
    def from_json(cls, data: dict[str, Any], key_slot: str | None) -> StoredContract:
        """From a parsed active contract object (`to_json`) and the key's index slot."""
        return cls(
            contract_id=data["contractId"],
            template_id=data["templateId"],
            payload=data["payload"],
            signatories=tuple(data["signatories"]),
            observers=tuple(data["observers"]),
            agreement_text=data["agreementText"],
            has_key="key" in data,
            key=data.get("key"),
            key_slot=key_slot,
        )


def compact(value: Any) -> str:
    """Compact JSON with UTF-8 text kept as is (never a raw newline: newlines are escaped)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class ContractRow:
    """An active contract as the query store holds it: what queries filter on, and the JSON
    text (`StoredContract.to_text`) they answer with.

    `payload` and `text` are None while the row is cold (evicted to bound the store's memory);
    the store loads them again from Redis when a read needs them.
    """

    __slots__ = ("contract_id", "key_slot", "offset", "parties", "payload", "template_id",
                 "text")

    def __init__(self, contract_id: str, template_id: str, parties: tuple[str, ...],
                 key_slot: str | None, offset: int, payload: Any, text: str | None) -> None:
        self.contract_id = contract_id
        self.template_id = template_id
        self.parties = parties  # the stakeholders: signatories and observers, each once
        self.key_slot = key_slot
        self.offset = offset  # the offset of the transaction that created it
        self.payload = payload
        self.text = text

    @classmethod
    def parse(cls, text: str, offset: int, key_slot: str | None,
              data: dict[str, Any] | None = None) -> ContractRow:
        """From the stored text (`data`: the text already parsed)."""
        data = json.loads(text) if data is None else data
        # Template ids and parties repeat across contracts: one string object each.
        parties = tuple(dict.fromkeys(sys.intern(p)
                                      for p in (*data["signatories"], *data["observers"])))
        return cls(data["contractId"], sys.intern(data["templateId"]), parties, key_slot,
                   offset, data["payload"], text)

    def visible_to(self, parties: frozenset[str]) -> bool:
        return not parties.isdisjoint(self.parties)

    @property
    def json(self) -> str:
        """The contract's JSON text; reads make cold rows hot (`LedgerFeed.hot`) first."""
        assert self.text is not None, "a cold row has no contract to show"
        return self.text

    def contract(self) -> StoredContract:
        return StoredContract.from_json(json.loads(self.json), self.key_slot)


@dataclass(frozen=True)
class ArchivedContract:
    """A contract a transaction consumed, as the JSON API's `archived` event shows it."""

    contract_id: str
    template_id: str  # fully qualified, like StoredContract.template_id

    def to_json(self) -> dict[str, Any]:
        return {"contractId": self.contract_id, "templateId": self.template_id}


# One entry of a transaction's `events`: a created contract or an archived one.
TransactionEvent = StoredContract | ArchivedContract


def event_json(event: TransactionEvent) -> dict[str, Any]:
    """`{"created": <active contract>}` or `{"archived": {"contractId", "templateId"}}`."""
    if isinstance(event, ArchivedContract):
        return {"archived": event.to_json()}
    return {"created": event.to_json()}


@dataclass(frozen=True)
class Party:
    identifier: str
    display_name: str | None = None
    is_local: bool = True

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"identifier": self.identifier}
        if self.display_name is not None:
            body["displayName"] = self.display_name
        body["isLocal"] = self.is_local
        return body

    def to_record(self) -> str:
        record = {} if self.display_name is None else {"displayName": self.display_name}
        return json.dumps(record, ensure_ascii=False)

    @classmethod
    def from_record(cls, identifier: str, raw: bytes | str) -> Party:
        data = json.loads(raw)
        return cls(identifier, data.get("displayName"))


@dataclass(frozen=True)
class Deduplication:
    """Which earlier submissions of the same command make a new one a duplicate: those within
    the last `window_ms` milliseconds (None: the ledger's maximum period), or those committed
    after `after_offset`."""

    window_ms: int | None = None
    after_offset: str | None = None


@dataclass(frozen=True)
class CommandMeta:
    """A command's `meta`: its id, the parties it acts and reads as (None: the token's), its
    submission id and deduplication period."""

    command_id: str | None = None
    act_as: tuple[str, ...] | None = None
    read_as: tuple[str, ...] | None = None
    submission_id: str | None = None
    deduplication: Deduplication | None = None


NO_META = CommandMeta()


@dataclass(frozen=True)
class Commit:
    """One transaction for the store: what it read, archives and creates, atomically."""

    created: tuple[StoredContract, ...] = ()
    archived: tuple[StoredContract, ...] = ()
    # Contracts the transaction read that must still be active when it commits.
    inputs: tuple[str, ...] = ()
    # Key slots (template id, key_hash) with the contract id the transaction saw there, or None.
    key_expectations: tuple[tuple[str, str, str | None], ...] = ()
    # Deduplication: (application id, act-as parties, command id).
    command: tuple[str, tuple[str, ...], str] | None = None
    deduplication: Deduplication = field(default_factory=Deduplication)
    submission_id: str | None = None
