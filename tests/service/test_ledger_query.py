"""The `/v1/query` language against model-tests' `Test:ParameterShowcase` (every scalar kind)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from .test_ledger_service import (
    ALICE,
    BOB,
    Ledger,
    create,
    failure,
    query,
    start_ledger,
    upload,
)

TEMPLATE = "Test:ParameterShowcase"


def showcase(integer: int, text: str, time: str, decimal: str,
             optional_text: str | None = None, operator: str = "Alice") -> dict[str, Any]:
    return {
        "operator": operator, "integer": integer, "decimal": decimal, "text": text,
        "bool": integer % 2 == 0, "time": time,
        "nestedOptionalInteger": {"value": {"tag": "SomeInteger", "value": integer}},
        "integerList": [integer], "optionalText": optional_text,
    }


@pytest.fixture
async def showcased(redis: aioredis.Redis, tmp_path: Path,
                    shared_fixtures: Path) -> AsyncIterator[Ledger]:
    ledger = await start_ledger(redis, tmp_path / "blobs")
    await upload(ledger, (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes())
    rows = [
        showcase(1, "", "2020-01-01T00:00:00Z", "1.5"),
        showcase(2, "O\u02bcReilly", "2020-01-01T00:00:00.5Z", "2.25", "some"),
        showcase(3, "a&b", "2021-06-30T12:00:00Z", "100", None),
        showcase(4, "zzz", "2019-12-31T23:59:59.999999Z", "-7.125", "x"),
    ]
    for row in rows:
        await create(ledger, TEMPLATE, row)
    await create(ledger, TEMPLATE, showcase(5, "bob's", "2020-01-01T00:00:00Z", "5", None,
                                            operator="Bob"), token=BOB)
    yield ledger
    await ledger.stop()


async def integers(ledger: Ledger, q: Any, token: str = ALICE) -> list[int]:
    reply = await query(ledger, {"templateIds": [TEMPLATE], "query": q}, token)
    assert reply["status"] == 200
    return [int(c["payload"]["integer"]) for c in reply["result"]]


@pytest.mark.parametrize(("q", "expected"), [
    ({}, [1, 2, 3, 4]),
    ({"integer": 2}, [2]),
    ({"integer": "2"}, [2]),
    ({"integer": {"%gt": 1, "%lte": "3"}}, [2, 3]),
    ({"decimal": 100}, [3]),
    ({"decimal": "100.0000000000"}, [3]),
    ({"decimal": {"%lt": 0}}, [4]),
    ({"decimal": {"%gte": "2.25"}}, [2, 3]),
    ({"text": ""}, [1]),
    ({"text": {"%lt": ""}}, []),
    ({"text": {"%gte": ""}}, [1, 2, 3, 4]),
    ({"text": {"%gt": "a", "%lt": "z"}}, [3]),
    ({"text": "O\u02bcReilly"}, [2]),
    ({"bool": True}, [2, 4]),
    ({"time": "2020-01-01T00:00:00.000Z"}, [1]),
    ({"time": {"%gt": "2020-01-01T00:00:00Z"}}, [2, 3]),
    ({"time": {"%lt": "2020-01-01T00:00:00+00:00"}}, [4]),
    ({"optionalText": None}, [1, 3]),
    ({"optionalText": "x"}, [4]),
    ({"nestedOptionalInteger": {"value": {"tag": "SomeInteger", "value": 3}}}, [3]),
    ({"nestedOptionalInteger": {"value": {"tag": "SomeInteger", "value": {"%gt": 2}}}},
     [3, 4]),
    ({"nestedOptionalInteger": {"value": {"tag": "NoInteger", "value": {}}}}, []),
    ({"integer": {"%gte": 2}, "text": {"%lt": "b"}, "bool": False}, [3]),
])
async def test_queries_match_typed_values(showcased: Ledger, q: Any, expected: list[int]) -> None:
    assert await integers(showcased, q) == expected


async def test_query_is_scoped_to_the_token_parties(showcased: Ledger) -> None:
    assert await integers(showcased, {}, token=BOB) == [5]


@pytest.mark.parametrize(("q", "message"), [
    ({"nope": 1}, "does not have fields nope"),
    ({"integerList": [1]}, "PrimTypeList not supported"),
    ({"integer": {"%lt": 1, "%lte": 2}}, "%lt and %lte"),
    ({"integer": {"%between": 1}}, "Unsupported range operator"),
    ({"integer": "one"}, "Int64"),
    ({"bool": {"%lt": True}}, "Expected true or false"),
])
async def test_ill_typed_queries_are_400(showcased: Ledger, q: Any, message: str) -> None:
    status, error = await failure(query(showcased, {"templateIds": [TEMPLATE], "query": q}))
    assert status == 400
    assert message in error["errors"][0]


async def test_query_fields_outside_query_are_rejected(showcased: Ledger) -> None:
    status, error = await failure(query(showcased, {"templateIds": [TEMPLATE], "integer": 1}))
    assert status == 400
    assert "likely should be within 'query' subobject" in error["errors"][0]
    status, error = await failure(query(showcased, {"templateIds": []}))
    assert status == 400
    assert "search requires at least one item in 'templateIds'" in error["errors"][0]
    status, error = await failure(query(showcased, {"templateIds": [TEMPLATE],
                                                    "readers": ["Bob"]}))
    assert status == 401
    assert error["errors"] == ["Queried parties not allowed by given JWT token: Bob"]
