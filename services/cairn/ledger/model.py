"""The ledger's stored records: active contracts (already JSON-encoded), parties, and the events
a transaction reports.

Contracts are kept in the DAML-LF JSON encoding the JSON API answers with, so reads need no
engine at all. The contract-key index is addressed by a digest of the engine's canonical form of
the key value (`value_key`), the same form the engine compares keys by, so the JSON spelling of a
key (`"300000"` or `300000.0`) never matters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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

    def to_record(self) -> str:
        record: dict[str, Any] = {
            "cid": self.contract_id,
            "tid": self.template_id,
            "payload": self.payload,
            "sig": list(self.signatories),
            "obs": list(self.observers),
            "agr": self.agreement_text,
        }
        if self.has_key:
            record["key"] = self.key
            record["slot"] = self.key_slot
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_record(cls, raw: bytes | str) -> StoredContract:
        return cls.from_data(json.loads(raw))

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> StoredContract:
        """From a parsed record."""
        return cls(
            contract_id=data["cid"],
            template_id=data["tid"],
            payload=data["payload"],
            signatories=tuple(data["sig"]),
            observers=tuple(data["obs"]),
            agreement_text=data["agr"],
            has_key="key" in data,
            key=data.get("key"),
            key_slot=data.get("slot"),
        )


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
