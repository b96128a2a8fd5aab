"""End-to-end: the JSON API's WebSocket streams through the real Envoy to the ledger process.

The stack is shared with the other end-to-end tests, so every test filters on values of its own
(a fresh currency or contract key) and never assumes an empty ledger. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cairn.ledger.v1 import ledger_service_pb2 as pb
from cairn.ledger.v1 import ledger_service_pb2_grpc as pb_grpc

from .conftest import RunningStack, exact
from .test_ledger_rest import ALICE, BOB, IOU, auth, post

pytestmark = pytest.mark.e2e

WAIT = 10.0
AUTH_SUBPROTOCOL = "daml.ws.auth"


@pytest.fixture(scope="module")
def rest(stack: RunningStack, shared_fixtures: Path) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
        reply = client.post("/v1/packages", content=dar, headers={
            **auth(ALICE), "Content-Type": "application/octet-stream"})
        assert reply.status_code == 200, reply.text
        yield client


def ws_url(stack: RunningStack, path: str) -> str:
    return stack.base_url.replace("http://", "ws://") + path


@pytest.fixture
async def opened(stack: RunningStack) -> AsyncIterator[list[ClientConnection]]:
    """Sockets a test opened; any left open are closed afterwards."""
    sockets: list[ClientConnection] = []
    yield sockets
    for ws in sockets:
        await ws.close()


async def open_stream(stack: RunningStack, opened: list[ClientConnection], request: Any,
                      path: str = "/v1/stream/query", token: str = ALICE) -> ClientConnection:
    ws = await connect(ws_url(stack, path),
                       subprotocols=[f"jwt.token.{token}", AUTH_SUBPROTOCOL])  # type: ignore[list-item]
    opened.append(ws)
    assert ws.subprotocol == AUTH_SUBPROTOCOL
    await ws.send(json.dumps(request))
    return ws


async def receive(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def until_events(ws: ClientConnection) -> Any:
    """The next message with events, skipping heartbeats (other tests commit meanwhile)."""
    while True:
        message = await receive(ws)
        if message.get("events"):
            return message


def create(rest: httpx.Client, template_id: str, payload: Any,
           token: str = ALICE) -> tuple[dict[str, Any], str]:
    """The created active contract (without completionOffset) and its completion offset."""
    reply = post(rest, "/v1/create", {"templateId": template_id, "payload": payload}, token)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()["result"]
    return ({k: v for k, v in result.items() if k != "completionOffset"},
            result["completionOffset"])


async def test_query_stream_snapshot_live_marker_created_and_archived_events(
    stack: RunningStack, rest: httpx.Client, opened: list[ClientConnection],
) -> None:
    currency = f"X{uuid.uuid4().hex[:8]}"
    existing, _ = create(rest, "Iou:Iou", {**IOU, "currency": currency})
    create(rest, "Iou:Iou", {**IOU, "issuer": "Bob", "owner": "Bob", "currency": currency}, BOB)
    ws = await open_stream(stack, opened, {"templateIds": ["Iou:Iou"],
                                           "query": {"currency": currency}})
    assert await receive(ws) == {"events": [{"created": existing, "matchedQueries": [0]}]}
    marker = await receive(ws)
    assert marker["events"] == [] and marker["offset"] is not None
    live, offset = create(rest, "Iou:Iou", {**IOU, "currency": currency, "amount": "1.5"})
    block = await until_events(ws)
    assert block == {"events": [{"created": live, "matchedQueries": [0]}], "offset": offset}
    assert block["offset"] > marker["offset"]  # fixed-width offsets order as strings
    exercised = post(rest, "/v1/exercise", {"templateId": "Iou:Iou",
                                            "contractId": live["contractId"],
                                            "choice": "Archive", "argument": {}})
    assert exercised.status_code == 200, exercised.text
    archived = await until_events(ws)
    assert archived == {"events": [{"archived": {"contractId": live["contractId"],
                                                 "templateId": live["templateId"]}}],
                        "offset": exercised.json()["result"]["completionOffset"]}
    await ws.close()
    assert ws.close_code == 1000


async def test_fetch_stream_by_contract_key(
    stack: RunningStack, rest: httpx.Client, opened: list[ClientConnection],
) -> None:
    key = f"k-{uuid.uuid4().hex}"
    ws = await open_stream(stack, opened, [{"templateId": "Test:TextKey", "key": ["Alice", key]}],
                           path="/v1/stream/fetch")
    assert (await receive(ws))["events"] == []  # nothing holds the key yet: the live marker
    created, offset = create(rest, "Test:TextKey",
                             {"tkParty": "Alice", "tkKey": key, "tkDisclosedTo": []})
    assert await until_events(ws) == {"events": [{"created": created}], "offset": offset}


async def test_bad_tokens_are_refused_at_the_upgrade_with_the_json_api_error(
    stack: RunningStack,
) -> None:
    with pytest.raises(InvalidStatus) as missing:
        await connect(ws_url(stack, "/v1/stream/query"),
                      subprotocols=[AUTH_SUBPROTOCOL])  # type: ignore[list-item]
    assert missing.value.response.status_code == 401
    assert missing.value.response.body == exact({"status": 401, "errors": [
        "Missing required jwt.token.[token] or daml.ws.auth subprotocol"]}).encode()
    with pytest.raises(InvalidStatus) as garbage:
        await connect(ws_url(stack, "/v1/stream/fetch"),
                      subprotocols=["jwt.token.garbage", AUTH_SUBPROTOCOL])  # type: ignore[list-item]
    assert garbage.value.response.status_code == 401
    assert json.loads(garbage.value.response.body)["status"] == 401


async def test_bad_and_repeated_requests_get_error_frames_then_a_clean_close(
    stack: RunningStack, rest: httpx.Client, opened: list[ClientConnection],
) -> None:
    unknown = await open_stream(stack, opened, {"templateIds": ["AA:BB"]})
    assert await receive(unknown) == {"status": 400, "errors": [
        "Cannot resolve any template ID from request"]}
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(unknown.recv(), WAIT)
    assert unknown.close_code == 1000

    twice = await open_stream(stack, opened, {"templateIds": ["Iou:Iou"],
                                              "query": {"currency": "none-such"}})
    assert (await receive(twice))["events"] == []
    await twice.send(json.dumps({"templateIds": ["Iou:Iou"]}))
    while (message := await receive(twice)).get("events") is not None:
        pass  # a heartbeat may come first
    assert message == {"status": 400, "errors": [
        "Multiple requests over the same WebSocket connection are not allowed."]}
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(twice.recv(), WAIT)
    assert twice.close_code == 1000


async def test_a_stream_resumed_at_its_last_offset_gets_what_it_missed(
    stack: RunningStack, rest: httpx.Client, opened: list[ClientConnection],
) -> None:
    currency = f"R{uuid.uuid4().hex[:8]}"
    request = {"templateIds": ["Iou:Iou"], "query": {"currency": currency}}
    kept, _ = create(rest, "Iou:Iou", {**IOU, "currency": currency})
    ws = await open_stream(stack, opened, request)
    assert (await receive(ws))["events"] == [{"created": kept, "matchedQueries": [0]}]
    last_offset = (await receive(ws))["offset"]
    await ws.close()
    # Missed while disconnected: a create, and the archive of the contract the client holds.
    missed, _ = create(rest, "Iou:Iou", {**IOU, "currency": currency, "amount": "2"})
    archived = post(rest, "/v1/exercise", {"templateId": "Iou:Iou",
                                           "contractId": kept["contractId"],
                                           "choice": "Archive", "argument": {}})
    assert archived.status_code == 200
    resumed = await connect(ws_url(stack, "/v1/stream/query"),
                            subprotocols=[f"jwt.token.{ALICE}", AUTH_SUBPROTOCOL])  # type: ignore[list-item]
    opened.append(resumed)
    await resumed.send(json.dumps({"offset": last_offset}))
    await resumed.send(json.dumps(request))
    assert (await until_events(resumed))["events"] == [{"created": missed,
                                                        "matchedQueries": [0]}]
    assert (await until_events(resumed))["events"] == [{"archived": {
        "contractId": kept["contractId"], "templateId": kept["templateId"]}}]


async def test_the_native_grpc_stream_through_envoy(stack: RunningStack,
                                                    rest: httpx.Client) -> None:
    currency = f"G{uuid.uuid4().hex[:8]}"
    query = struct_pb2.Struct()
    query.update({"currency": currency})
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        call = stub.StreamQuery(
            pb.StreamQueryRequest(queries=[pb.StreamQuery(template_ids=["Iou:Iou"],
                                                          query=query)]),
            metadata=(("authorization", f"Bearer {ALICE}"),))
        blocks = aiter(call)
        marker = await asyncio.wait_for(anext(blocks), WAIT)
        assert marker.offset and not marker.events
        created, offset = create(rest, "Iou:Iou", {**IOU, "currency": currency})
        while not (block := await asyncio.wait_for(anext(blocks), WAIT)).events:
            pass  # heartbeats
        assert block.offset == offset
        assert block.events[0].created.contract_id == created["contractId"]
        call.cancel()
