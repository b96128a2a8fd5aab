"""Which commands the ledger interprets on its event loop: payloads of few JSON values, shallow."""

from __future__ import annotations

from cairn.ledger.service import INLINE_MAX_DEPTH, INLINE_MAX_VALUES, small_json


def test_small_payloads_are_few_values_nested_shallowly() -> None:
    assert small_json({"issuer": "Alice", "amount": "1.0", "observers": ["Bob", "Carol"]})
    assert small_json(None) and small_json("x" * 10_000)
    assert small_json(list(range(INLINE_MAX_VALUES - 1)))  # the list itself is a value too
    assert not small_json(list(range(INLINE_MAX_VALUES)))
    assert not small_json({"a": [{"b": i} for i in range(INLINE_MAX_VALUES)]})
    nested: object = 1
    for _ in range(INLINE_MAX_DEPTH - 1):
        nested = [nested]
    assert small_json(nested)
    assert not small_json([nested])
