"""The query store's projection logic: indexes, ordering, transactions in order, the memory bound,
waiting for an offset; and the ledger settings that configure it."""

from __future__ import annotations

import asyncio

import pytest

from cairn.ledger import querystore
from cairn.ledger.feed import Retention
from cairn.ledger.model import ContractRow, StoredContract
from cairn.ledger.querystore import QueryStore
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.store import LoggedTransaction

IOU = "pkg:Iou:Iou"
KEYED = "pkg:Test:TextKey"


def row(cid: str, offset: int, template: str = IOU, parties: tuple[str, ...] = ("Alice",),
        slot: str | None = None) -> ContractRow:
    contract = StoredContract(cid, template, {"n": cid}, parties[:1], parties[1:],
                              has_key=slot is not None, key="k" if slot else None,
                              key_slot=slot)
    return ContractRow.parse(contract.to_text(), offset, slot)


def tx(offset: int, created: tuple[ContractRow, ...] = (),
       archived: tuple[ContractRow, ...] = ()) -> LoggedTransaction:
    return LoggedTransaction(offset, None, created, archived)


def ids(rows: list[ContractRow]) -> list[str]:
    return [r.contract_id for r in rows]


def test_transactions_apply_in_order_and_index_by_party_template_and_key() -> None:
    store = QueryStore()
    store.load([row("b", 2), row("a", 1, parties=("Alice", "Bob"))], 2)
    store.apply(tx(3, created=(row("d", 3), row("c", 3, KEYED, slot="s1"))))
    assert store.offset == 3 and len(store) == 4
    # Oldest first; within a transaction by contract id.
    assert ids(store.visible(["Alice"], [IOU])) == ["a", "b", "d"]
    assert ids(store.visible(["Alice", "Bob"])) == ["a", "b", "c", "d"]
    assert ids(store.visible(["Bob"])) == ["a"]
    assert ids(store.visible(["Carol"])) == []
    found = store.by_key(KEYED, "s1")
    assert found is not None and found.contract_id == "c"
    archived = store.apply(tx(4, archived=(row("c", 0, KEYED, slot="s1"),
                                           row("a", 0, parties=("Alice", "Bob")))))
    assert [r.offset for r in archived] == [3, 1]  # the rows the store held
    assert store.by_key(KEYED, "s1") is None and store.get("a") is None
    assert ids(store.visible(["Alice", "Bob"])) == ["b", "d"]
    with pytest.raises(ValueError, match="does not follow"):
        store.apply(tx(6))


def test_beyond_the_bound_the_oldest_rows_go_cold() -> None:
    store = QueryStore(max_resident=2)
    store.load([row("a", 1), row("b", 2), row("c", 3)], 3)
    assert store.hot == 2
    cold = store.get("a")
    assert cold is not None and cold.payload is None and cold.text is None
    assert ids(store.visible(["Alice"])) == ["a", "b", "c"]  # still indexed
    store.apply(tx(4, created=(row("d", 4),), archived=(row("b", 0),)))
    assert store.hot == 2
    assert [r.payload is not None for r in store.visible(["Alice"])] == [False, True, True]
    # An archived cold row is reported from the log's copy, which has its payload.
    (archived,) = store.apply(tx(5, archived=(row("a", 0),)))
    assert archived.payload == {"n": "a"}


async def test_waiting_for_an_offset() -> None:
    store = QueryStore()
    store.load([], 5)
    await asyncio.wait_for(store.reached(5), 1)
    waiting = asyncio.create_task(store.reached(7))
    await asyncio.sleep(0)
    store.apply(tx(6))
    await asyncio.sleep(0)
    assert not waiting.done()
    store.apply(tx(7))
    await asyncio.wait_for(waiting, 1)


def test_ledger_settings_from_the_environment() -> None:
    settings = LedgerSettings.from_env({
        "CAIRN_LEDGER_LOG_MAX_TRANSACTIONS": "500", "CAIRN_LEDGER_LOG_MAX_AGE_SECONDS": "3600",
        "CAIRN_LEDGER_PRUNE_INTERVAL_SECONDS": "5", "CAIRN_LEDGER_QUERY_STORE_MAX_CONTRACTS": "9",
        "CAIRN_LEDGER_CONSISTENCY_TIMEOUT_SECONDS": "2.5",
        "CAIRN_LEDGER_MAX_DEDUPLICATION_SECONDS": "60"})
    assert settings.retention == Retention(500, 3600.0, 5.0)
    assert settings.query_store_max_contracts == 9
    assert settings.consistency_timeout_seconds == 2.5
    assert settings.max_deduplication_seconds == 60
    defaults = LedgerSettings.from_env({})
    assert defaults.retention == Retention(100_000, 0.0, 60.0)
    assert defaults.query_store_max_contracts == 0


@pytest.mark.parametrize(("name", "value"), [
    ("CAIRN_LEDGER_LOG_MAX_TRANSACTIONS", "-1"),
    ("CAIRN_LEDGER_LOG_MAX_TRANSACTIONS", "lots"),
    ("CAIRN_LEDGER_PRUNE_INTERVAL_SECONDS", "0"),
    ("CAIRN_LEDGER_CONSISTENCY_TIMEOUT_SECONDS", "0"),
    ("CAIRN_LEDGER_QUERY_STORE_MAX_CONTRACTS", "1.5"),
    ("CAIRN_LEDGER_MAX_DAR_BYTES", "big"),
])
def test_bad_ledger_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        LedgerSettings.from_env({name: value})


def test_equality_on_a_large_bucket_comes_from_a_field_index_kept_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(querystore, "INDEX_MIN_ROWS", 3)

    def iou(cid: str, offset: int, amount: str, parties: tuple[str, ...] = ("Alice",)
            ) -> ContractRow:
        contract = StoredContract(cid, IOU, {"amount": amount, "owner": parties[0]},
                                  parties[:1], parties[1:])
        return ContractRow.parse(contract.to_text(), offset, None)

    store = QueryStore()
    store.load([iou("a", 1, "1.0"), iou("b", 2, "2.0"), iou("c", 3, "1.0"),
                iou("d", 4, "1.0", ("Bob",))], 4)
    assert ids(store.equal(["Alice"], IOU, "amount", "1.0")) == ["a", "c"]  # builds the index
    assert ids(store.equal(["Bob"], IOU, "amount", "1.0")) == ["d"]  # a small bucket: scanned
    store.apply(tx(5, created=(iou("e", 5, "1.0"), iou("f", 5, "3.0")),
                   archived=(iou("a", 0, "1.0"),)))
    assert ids(store.equal(["Alice"], IOU, "amount", "1.0")) == ["c", "e"]
    assert ids(store.equal(["Alice"], IOU, "amount", "3.0")) == ["f"]
    assert ids(store.equal(["Alice", "Bob"], IOU, "amount", "1.0")) == ["c", "d", "e"]
    assert store.equal(["Alice"], IOU, "amount", "9.9") == []
    assert store.equal(["Alice"], KEYED, "amount", "1.0") == []
    # The bucket empties: its indexes go with it, and a new bucket starts without one.
    store.apply(tx(6, archived=tuple(iou(c, 0, a) for c, a in
                                     (("b", "2.0"), ("c", "1.0"), ("e", "1.0"), ("f", "3.0")))))
    assert store.equal(["Alice"], IOU, "amount", "1.0") == []
    store.apply(tx(7, created=(iou("g", 7, "1.0"),)))
    assert ids(store.equal(["Alice"], IOU, "amount", "1.0")) == ["g"]
