"""REST bodies the ledger splices from stored contract text instead of encoding them again."""

from __future__ import annotations

from cairn.ledger.grpc_api import created_envelope, envelope
from cairn.ledger.model import StoredContract


def test_a_created_contract_reply_is_the_envelope_of_its_json() -> None:
    offset = "00000000000000000042"
    for contract in (
        StoredContract("00ab", "p:M:T", {"a": "é\n\"x", "n": [1, {"b": None}], "d": "1.50"},
                       ("Alice",), ("Bob", "Ç")),
        StoredContract("00cd", "p:M:K", {"a": 1}, ("Alice",), (), "agreed", True, {"k": "ü"},
                       "slot"),
    ):
        expected = envelope({**contract.to_json(), "completionOffset": offset})
        assert created_envelope(contract, offset) == expected
