"""The WebSocket streams against the real ledger servicer, a real Redis and real sockets.

Commands go through the gRPC servicer (as Envoy's transcoded REST calls do); streams are opened
with the `websockets` client and the JSON API's subprotocols. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import json_format, struct_pb2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cairn.auth.ledger_jwt import LedgerTokenPolicy
from cairn.ledger.model import Commit, StoredContract
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.store import LedgerStore
from cairn.ledger.streams import DEFAULT_WS_PORT, MULTIPLE_REQUESTS, StreamSettings
from cairn.ledger.v1 import ledger_service_pb2 as pb
from cairn.ledger.websocket import AUTH_SUBPROTOCOL, MISSING_SUBPROTOCOL, StreamServer
from cairn.runtime import redis as redis_connection
from tests.conftest import RedisProcess

from .test_ledger_service import (
    ALICE,
    BOB,
    IOU,
    Ledger,
    bearer,
    create,
    fetch,
    json_request,
    query,
    rest,
    result,
    start_ledger,
    upload,
)

HEARTBEAT = 0.3
WAIT = 5.0  # upper bound of any single wait for a frame


@dataclass
class StreamLedger:
    ledger: Ledger
    server: StreamServer
    store: LedgerStore

    def url(self, path: str = "/v1/stream/query") -> str:
        return f"ws://127.0.0.1:{self.server.port}{path}"


@pytest.fixture
async def streams(redis: aioredis.Redis, tmp_path: Path,
                  shared_fixtures: Path) -> AsyncIterator[StreamLedger]:
    ledger = await start_ledger(redis, tmp_path / "blobs", heartbeat_seconds=HEARTBEAT)
    await upload(ledger, (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes())
    server = StreamServer(ledger.app.streams, LedgerTokenPolicy(),
                          StreamSettings(port=0, heartbeat_seconds=HEARTBEAT))
    await server.start("127.0.0.1")
    yield StreamLedger(ledger, server, ledger.app.store)
    await server.close()
    await ledger.stop()


def value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


def protocols(token: str) -> list[Any]:
    return [f"jwt.token.{token}", AUTH_SUBPROTOCOL]


async def receive(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def open_stream(streams: StreamLedger, request: Any, token: str = ALICE,
                      path: str = "/v1/stream/query") -> ClientConnection:
    ws = await connect(streams.url(path), subprotocols=protocols(token))
    assert ws.subprotocol == AUTH_SUBPROTOCOL
    await ws.send(json.dumps(request))
    return ws


def active(created_reply: Any) -> Any:
    """The active contract of a create reply, without its completionOffset."""
    return {k: v for k, v in created_reply["result"].items() if k != "completionOffset"}


async def test_query_stream_sends_snapshot_then_live_marker_then_created_events(
    streams: StreamLedger,
) -> None:
    first = active(await create(streams.ledger, "Iou:Iou", IOU))
    await create(streams.ledger, "Iou:Iou", {**IOU, "issuer": "Bob", "owner": "Bob"}, token=BOB)
    ws = await open_stream(streams, [{"templateIds": ["Iou:Iou"],
                                      "query": {"amount": {"%lte": 1000}}},
                                     {"templateIds": ["Iou:Iou"], "query": {"currency": "EUR"}},
                                     {"templateIds": ["Iou:Iou"]}])
    # Alice sees only her Iou; it matches queries 0 and 2.
    assert await receive(ws) == {"events": [{"created": first, "matchedQueries": [0, 2]}]}
    end = await streams.store.ledger_end()
    assert await receive(ws) == {"events": [], "offset": end}
    euro = active(await create(streams.ledger, "Iou:Iou", {**IOU, "currency": "EUR",
                                                            "amount": "5000"}))
    block = await receive(ws)
    assert block == {"events": [{"created": euro, "matchedQueries": [1, 2]}],
                     "offset": await streams.store.ledger_end()}
    await ws.close()


async def test_heartbeats_repeat_the_last_offset_and_ignore_other_parties_commits(
    streams: StreamLedger,
) -> None:
    await create(streams.ledger, "Iou:Iou", IOU)
    ws = await open_stream(streams, {"templateIds": ["Iou:Iou"]})
    await receive(ws)  # the snapshot
    marker = await receive(ws)
    await create(streams.ledger, "Iou:Iou", {**IOU, "issuer": "Bob", "owner": "Bob"}, token=BOB)
    bob_offset = await streams.store.ledger_end()
    # Bob's commit is invisible to Alice: no block, but the next tick carries its offset.
    tick = await receive(ws)
    assert tick == {"events": [], "offset": bob_offset}
    assert tick["offset"] > marker["offset"]
    assert await receive(ws) == tick
    await ws.close()


async def test_an_empty_ledger_gives_a_null_marker_and_no_ticks_until_a_commit(
    streams: StreamLedger,
) -> None:
    ws = await open_stream(streams, {"templateIds": ["Iou:Iou"]})
    assert await receive(ws) == {"events": [], "offset": None}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), HEARTBEAT * 3)
    created = active(await create(streams.ledger, "Iou:Iou", IOU))
    block = await receive(ws)
    assert block["events"] == [{"created": created, "matchedQueries": [0]}]
    assert await receive(ws) == {"events": [], "offset": block["offset"]}
    await ws.close()


async def test_archives_are_sent_only_for_contracts_the_stream_showed(
    streams: StreamLedger,
) -> None:
    shown = (await create(streams.ledger, "Iou:Iou", IOU))["result"]
    hidden = (await create(streams.ledger, "Iou:Iou", {**IOU, "currency": "CHF"}))["result"]
    ws = await open_stream(streams, {"templateIds": ["Iou:Iou"], "query": {"currency": "USD"}})
    assert [e["created"]["contractId"] for e in (await receive(ws))["events"]] == [
        shown["contractId"]]
    await receive(ws)  # live marker
    # Archive both directly in the store, as an exercise commits them.
    await streams.store.commit(Commit(archived=(
        await _stored(streams, shown["contractId"]), await _stored(streams, hidden["contractId"]))))
    block = await receive(ws)
    assert block == {"events": [{"archived": {"contractId": shown["contractId"],
                                              "templateId": shown["templateId"]}}],
                     "offset": await streams.store.ledger_end()}
    await ws.close()


async def _stored(streams: StreamLedger, contract_id: str) -> StoredContract:
    contract = await streams.store.contract(contract_id)
    assert contract is not None
    return contract


async def test_fetch_stream_follows_a_contract_key(streams: StreamLedger) -> None:
    payload = {"tkParty": "Alice", "tkKey": "k1", "tkDisclosedTo": []}
    first = active(await create(streams.ledger, "Test:TextKey", payload))
    await create(streams.ledger, "Test:TextKey", {**payload, "tkKey": "other"})
    ws = await open_stream(streams, [{"templateId": "Test:TextKey", "key": ["Alice", "k1"]},
                                     {"templateId": "Test:TextKey",
                                      "key": {"_1": "Alice", "_2": "k2"}}],
                           path="/v1/stream/fetch")
    assert await receive(ws) == {"events": [{"created": first}]}
    assert (await receive(ws))["offset"] == await streams.store.ledger_end()
    await create(streams.ledger, "Test:TextKey", {**payload, "tkKey": "unwatched"})
    second = active(await create(streams.ledger, "Test:TextKey", {**payload, "tkKey": "k2"}))
    block = await receive(ws)
    assert block == {"events": [{"created": second}], "offset": await streams.store.ledger_end()}
    await streams.store.commit(Commit(archived=(await _stored(streams, first["contractId"]),)))
    assert (await receive(ws))["events"] == [{"archived": {"contractId": first["contractId"],
                                                           "templateId": first["templateId"]}}]
    await ws.close()


async def test_upgrade_without_the_subprotocols_or_with_a_bad_token_is_refused_401(
    streams: StreamLedger,
) -> None:
    with pytest.raises(InvalidStatus) as missing:
        await connect(streams.url(), subprotocols=[AUTH_SUBPROTOCOL])  # type: ignore[list-item]
    assert missing.value.response.status_code == 401
    assert json.loads(missing.value.response.body) == {"status": 401,
                                                       "errors": [MISSING_SUBPROTOCOL]}
    with pytest.raises(InvalidStatus) as bad:
        await connect(streams.url(), subprotocols=protocols("not-a-jwt"))
    assert bad.value.response.status_code == 401
    assert bad.value.response.headers["Content-Type"] == "application/json"
    assert json.loads(bad.value.response.body)["status"] == 401
    with pytest.raises(InvalidStatus) as unknown_path:
        await connect(streams.url("/v1/stream/nothing"), subprotocols=protocols(ALICE))
    assert unknown_path.value.response.status_code == 404


async def expect_error_then_close(ws: ClientConnection, status: int, message: str) -> None:
    assert await receive(ws) == {"status": status, "errors": [message]}
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), WAIT)
    assert ws.close_code == 1000


async def test_a_second_request_gets_the_documented_error_and_the_socket_closes(
    streams: StreamLedger,
) -> None:
    ws = await open_stream(streams, {"templateIds": ["Iou:Iou"]})
    assert await receive(ws) == {"events": [], "offset": None}
    await ws.send(json.dumps({"templateIds": ["Iou:Iou"]}))
    await expect_error_then_close(ws, 400, MULTIPLE_REQUESTS)


@pytest.mark.parametrize(("request_text", "message"), [
    ("{oops", "JSON parser error: Expecting property name enclosed in double quotes at input "
              "index 1 (line 1, position 2)"),
    (json.dumps({"templateIds": []}),
     "JsonReaderError. Cannot read JSON: <{\"templateIds\":[]}>. Cause: "
     "spray.json.DeserializationException: search requires at least one item in "
     "'templateIds'"),
    (json.dumps({"templateIds": ["AA:BB"]}), "Cannot resolve any template ID from request"),
    (json.dumps({"templateIds": ["Iou:Iou"], "query": {"nope": 1}}),
     "Iou:Iou does not have fields nope"),
])
async def test_malformed_requests_get_one_400_frame(streams: StreamLedger, request_text: str,
                                                    message: str) -> None:
    ws = await connect(streams.url(), subprotocols=protocols(ALICE))
    await ws.send(request_text)
    await expect_error_then_close(ws, 400, message)


async def test_unknown_template_ids_are_warned_first(streams: StreamLedger) -> None:
    ws = await open_stream(streams, {"templateIds": ["Iou:Iou", "Nope:Nothing"]})
    assert await receive(ws) == {"warnings": {"unknownTemplateIds": ["Nope:Nothing"]}}
    assert await receive(ws) == {"events": [], "offset": None}
    await ws.close()


async def resume(streams: StreamLedger, offset: str | None, request: Any,
                 path: str = "/v1/stream/query") -> ClientConnection:
    ws = await connect(streams.url(path), subprotocols=protocols(ALICE))
    if offset is not None:
        await ws.send(json.dumps({"offset": offset}))
    await ws.send(json.dumps(request))
    return ws


async def test_resuming_at_the_ledger_end_skips_the_snapshot(streams: StreamLedger) -> None:
    await create(streams.ledger, "Iou:Iou", IOU)
    end = await streams.store.ledger_end()
    ws = await resume(streams, end, {"templateIds": ["Iou:Iou"]})
    assert await receive(ws) == {"events": [], "offset": end}
    await ws.close()


async def test_resuming_at_an_older_offset_replays_exactly_what_came_after_it(
    streams: StreamLedger,
) -> None:
    first = (await create(streams.ledger, "Iou:Iou", IOU))["result"]
    seen_at = first["completionOffset"]
    second = active(await create(streams.ledger, "Iou:Iou", {**IOU, "amount": "2"}))
    await create(streams.ledger, "Iou:Iou", {**IOU, "issuer": "Bob", "owner": "Bob"}, token=BOB)
    await streams.store.commit(Commit(archived=(await _stored(streams, first["contractId"]),)))
    archived_at = await streams.store.ledger_end()
    ws = await resume(streams, seen_at, {"templateIds": ["Iou:Iou"]})
    assert await receive(ws) == {"events": [{"created": second, "matchedQueries": [0]}],
                                 "offset": second_offset(seen_at, 1)}
    # Bob's Iou is not Alice's business: no block for it.
    assert await receive(ws) == {"events": [{"archived": {
        "contractId": first["contractId"], "templateId": first["templateId"]}}],
        "offset": archived_at}
    assert await receive(ws) == {"events": [], "offset": archived_at}  # the live marker
    live = active(await create(streams.ledger, "Iou:Iou", IOU))
    assert (await receive(ws))["events"] == [{"created": live, "matchedQueries": [0]}]
    await ws.close()
    # A query that resumes mixed with one that starts with the snapshot (per-query offsets).
    ws = await resume(streams, None, [{"templateIds": ["Iou:Iou"], "offset": seen_at},
                                      {"templateIds": ["Iou:Iou"], "query": {"amount": "2"}}])
    assert await receive(ws) == {"events": [{"created": second, "matchedQueries": [1]}]}
    assert [list(e) for e in (await receive(ws))["events"]] == [["created", "matchedQueries"]]
    assert (await receive(ws))["events"][0]["archived"]["contractId"] == first["contractId"]
    assert (await receive(ws))["events"][0]["created"]["contractId"] == live["contractId"]
    assert await receive(ws) == {"events": [], "offset": await streams.store.ledger_end()}
    await ws.close()


def second_offset(offset: str, steps: int) -> str:
    return str(int(offset) + steps).zfill(len(offset))


async def test_pruned_future_and_malformed_offsets_are_400_frames(streams: StreamLedger) -> None:
    await create(streams.ledger, "Iou:Iou", IOU)
    first = await streams.store.ledger_end()
    assert first is not None
    await create(streams.ledger, "Iou:Iou", IOU)
    await create(streams.ledger, "Iou:Iou", IOU)
    pruned = await streams.store.prune(max_transactions=1, max_age_seconds=0)
    stale = await resume(streams, first, {"templateIds": ["Iou:Iou"]})
    frame = await receive(stale)
    assert frame["status"] == 400
    assert frame["errors"][0].startswith(
        f"Query offset has been pruned: offset {first} is before the pruning offset "
        f"{second_offset(first, pruned - int(first))}")
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(stale.recv(), WAIT)
    # At the pruning offset itself a stream still resumes.
    at_pruned = await resume(streams, second_offset(first, pruned - int(first)),
                             {"templateIds": ["Iou:Iou"]})
    assert len((await receive(at_pruned))["events"]) == 1
    await at_pruned.close()
    future = await resume(streams, "99999", {"templateIds": ["Iou:Iou"]})
    assert (await receive(future))["errors"][0].startswith("Offset 00000000000000099999 is "
                                                           "beyond the ledger end")
    bad = await resume(streams, "0xff", {"templateIds": ["Iou:Iou"]})
    assert (await receive(bad))["errors"][0].endswith("offset must be a string holding a "
                                                      "ledger offset")


async def test_fetch_requests_are_validated(streams: StreamLedger) -> None:
    empty = await open_stream(streams, [], path="/v1/stream/fetch")
    assert (await receive(empty))["status"] == 400
    at_offset = await open_stream(streams, [{"templateId": "Test:TextKey", "key": ["Alice", "x"],
                                             "contractIdAtOffset": None}],
                                  path="/v1/stream/fetch")
    await expect_error_then_close(at_offset, 400, "contractIdAtOffset is not allowed for "
                                                  "WebSocket streams starting at the beginning")


async def test_commits_racing_with_the_snapshot_are_neither_lost_nor_doubled(
    streams: StreamLedger,
) -> None:
    async def creator() -> None:
        for _ in range(15):
            await create(streams.ledger, "Iou:Iou", IOU)

    writing = asyncio.create_task(creator())
    seen: dict[str, int] = {}
    sockets = []
    for _ in range(5):
        ws = await open_stream(streams, {"templateIds": ["Iou:Iou"]})
        sockets.append(ws)
        await asyncio.sleep(0.02)
    await writing
    final_end = await streams.store.ledger_end()
    for ws in sockets:
        seen.clear()
        while True:
            message = await receive(ws)
            for event in message["events"]:
                cid = event["created"]["contractId"]
                seen[cid] = seen.get(cid, 0) + 1
            if message.get("offset") == final_end:
                break
        assert len(seen) == 15 and set(seen.values()) == {1}
        await ws.close()


async def test_closing_the_server_closes_open_streams_going_away(streams: StreamLedger) -> None:
    ws = await open_stream(streams, {"templateIds": ["Iou:Iou"]})
    await receive(ws)
    await streams.server.close()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), WAIT)
    assert ws.close_code == 1001


def test_the_stream_port_defaults_to_the_port_after_the_grpc_port() -> None:
    assert StreamSettings.from_env({}).port == DEFAULT_WS_PORT == 20055
    assert StreamSettings.from_env({}, grpc_port=40000).port == 40001
    assert StreamSettings.from_env({"CAIRN_LEDGER_WS_PORT": "9000"}, grpc_port=40000).port == 9000


@pytest.mark.parametrize(("env", "named"), [
    ({"CAIRN_LEDGER_WS_PORT": "http"}, "CAIRN_LEDGER_WS_PORT"),
    ({"CAIRN_LEDGER_WS_PORT": "70000"}, "CAIRN_LEDGER_WS_PORT"),
    ({"CAIRN_LEDGER_WS_HEARTBEAT_SECONDS": "0"}, "CAIRN_LEDGER_WS_HEARTBEAT_SECONDS"),
    ({"CAIRN_LEDGER_WS_HEARTBEAT_SECONDS": "soon"}, "CAIRN_LEDGER_WS_HEARTBEAT_SECONDS"),
])
def test_bad_stream_settings_are_refused_naming_the_variable(env: dict[str, str],
                                                             named: str) -> None:
    with pytest.raises(ValueError, match=named):
        StreamSettings.from_env(env)


async def test_a_lost_feed_connection_neither_ends_streams_nor_loses_commits(
    streams: StreamLedger, redis: aioredis.Redis,
) -> None:
    ws = await open_stream(streams, {"templateIds": ["Iou:Iou"]})
    assert await receive(ws) == {"events": [], "offset": None}
    created = []
    for round_number in range(3):
        # Commits published while the feed reconnects come from the log instead.
        await redis.client_kill_filter(_type="pubsub")
        created.append(active(await create(streams.ledger, "Iou:Iou", IOU))["contractId"])
        created.append(active(await create(streams.ledger, "Iou:Iou", IOU))["contractId"])
        assert round_number < 3
    seen: list[str] = []
    end = await streams.store.ledger_end()
    while True:
        block = await receive(ws)
        seen += [e["created"]["contractId"] for e in block["events"]]
        if block.get("offset") == end:
            break
    assert seen == created
    again = await open_stream(streams, {"templateIds": ["Iou:Iou"]})
    assert len((await receive(again))["events"]) == 6
    await again.close()
    await ws.close()


async def test_live_events_name_every_matching_query_resumed_or_not(
    streams: StreamLedger,
) -> None:
    await create(streams.ledger, "Iou:Iou", IOU)
    end = await streams.store.ledger_end()
    ws = await open_stream(streams, [{"templateIds": ["Iou:Iou"], "offset": end},
                                     {"templateIds": ["Iou:Iou"]}])
    # Only the element without an offset gets the snapshot.
    assert [e["matchedQueries"] for e in (await receive(ws))["events"]] == [[1]]
    assert await receive(ws) == {"events": [], "offset": end}
    await create(streams.ledger, "Iou:Iou", IOU)
    assert [e["matchedQueries"] for e in (await receive(ws))["events"]] == [[0, 1]]
    await ws.close()


async def test_a_fetch_stream_resumed_at_the_ledger_end_reports_the_holders_archive(
    streams: StreamLedger,
) -> None:
    held = active(await create(streams.ledger, "Test:TextKey",
                               {"tkParty": "Alice", "tkKey": "held", "tkDisclosedTo": []}))
    end = await streams.store.ledger_end()
    ws = await connect(streams.url("/v1/stream/fetch"), subprotocols=protocols(ALICE))
    await ws.send(json.dumps({"offset": end}))
    await ws.send(json.dumps([{"templateId": "Test:TextKey", "key": ["Alice", "held"],
                               "contractIdAtOffset": held["contractId"]}]))
    assert await receive(ws) == {"events": [], "offset": end}  # no snapshot when resuming
    await streams.store.commit(Commit(archived=(await _stored(streams, held["contractId"]),)))
    assert (await receive(ws))["events"] == [{"archived": {"contractId": held["contractId"],
                                                           "templateId": held["templateId"]}}]
    await ws.close()


async def test_a_resumed_fetch_stream_holds_contract_id_at_offset_semantics(
    streams: StreamLedger,
) -> None:
    payload = {"tkParty": "Alice", "tkKey": "moving", "tkDisclosedTo": []}
    holder = (await create(streams.ledger, "Test:TextKey", payload))["result"]
    offset = holder["completionOffset"]
    other = (await create(streams.ledger, "Test:TextKey", {**payload, "tkKey": "other"}))[
        "result"]
    # After the offset: the holder is archived and the key taken by a successor, in one
    # transaction; the unwatched contract is archived too.
    successor = (await streams.ledger.stub.Exercise(pb.ExerciseRequest(
        rest=json_request({"templateId": "Test:TextKey", "contractId": holder["contractId"],
                           "choice": "TextKeyDisclose",
                           "argument": {"tkNewDisclosedTo": ["Bob"]}})),
        metadata=rest(ALICE)))
    events = result(successor)["result"]["events"]
    new_holder = events[-1]["created"]
    await streams.store.commit(Commit(archived=(await _stored(streams, other["contractId"]),)))
    keys = [{"templateId": "Test:TextKey", "key": {"_1": "Alice", "_2": "moving"},
             "contractIdAtOffset": holder["contractId"]}]
    ws = await resume(streams, offset, keys, path="/v1/stream/fetch")
    block = await receive(ws)
    assert block["events"] == [
        {"archived": {"contractId": holder["contractId"], "templateId": holder["templateId"]}},
        {"created": new_holder}]
    assert await receive(ws) == {"events": [], "offset": await streams.store.ledger_end()}
    await ws.close()
    # A client that claims it held nothing at the offset is not told about the holder's archive
    # (the JSON API's guarantee when every contractIdAtOffset is given) but sees the successor.
    ws = await resume(streams, offset, [{**keys[0], "contractIdAtOffset": None}],
                      path="/v1/stream/fetch")
    assert (await receive(ws))["events"] == [{"created": new_holder}]
    await ws.close()


async def grpc_blocks(call: Any, count: int) -> list[pb.StreamResponse]:
    blocks = []
    async for block in call:
        blocks.append(block)
        if len(blocks) == count:
            break
    return blocks


async def test_the_grpc_twins_send_the_same_blocks_as_the_websockets(
    streams: StreamLedger,
) -> None:
    first = (await create(streams.ledger, "Iou:Iou", IOU))["result"]
    stub = streams.ledger.stub
    query = pb.StreamQueryRequest(queries=[pb.StreamQuery(template_ids=["Iou:Iou", "No:Such"])])
    call = stub.StreamQuery(query, metadata=bearer(ALICE))
    warnings, snapshot, marker = await asyncio.wait_for(grpc_blocks(call, 3), WAIT)
    assert list(warnings.unknown_template_ids) == ["No:Such"]
    assert snapshot.snapshot and not snapshot.HasField("offset")
    assert [e.created.contract_id for e in snapshot.events] == [first["contractId"]]
    assert list(snapshot.events[0].matched_queries) == [0]
    assert marker.offset == first["completionOffset"] and not marker.events
    second = (await create(streams.ledger, "Iou:Iou", IOU))["result"]
    (live,) = await asyncio.wait_for(grpc_blocks(call, 1), WAIT)
    assert live.offset == second["completionOffset"]
    assert live.events[0].created.payload.struct_value["amount"] == "999.99"
    call.cancel()
    # Resuming at the first offset replays the second create, then the live marker.
    resumed = stub.StreamQuery(pb.StreamQueryRequest(
        queries=[pb.StreamQuery(template_ids=["Iou:Iou"])], offset=first["completionOffset"]),
        metadata=bearer(ALICE))
    replayed, marker = await asyncio.wait_for(grpc_blocks(resumed, 2), WAIT)
    assert [e.created.contract_id for e in replayed.events] == [second["contractId"]]
    assert marker.offset == second["completionOffset"]
    resumed.cancel()
    fetch = stub.StreamFetch(pb.StreamFetchRequest(keys=[pb.StreamFetchKey(
        template_id="Test:TextKey", key=value({"_1": "Alice", "_2": "none"}))]),
        metadata=bearer(ALICE))
    (empty_marker,) = await asyncio.wait_for(grpc_blocks(fetch, 1), WAIT)
    assert empty_marker.offset == second["completionOffset"] and not empty_marker.snapshot
    fetch.cancel()


async def test_grpc_stream_errors_are_statuses(streams: StreamLedger) -> None:
    stub = streams.ledger.stub
    await create(streams.ledger, "Iou:Iou", IOU)
    await create(streams.ledger, "Iou:Iou", IOU)
    await streams.store.prune(max_transactions=1, max_age_seconds=0)
    cases = [
        (pb.StreamQueryRequest(queries=[pb.StreamQuery(template_ids=["Iou:Iou"])],
                               offset="00000000000000000000"),
         grpc.StatusCode.FAILED_PRECONDITION, "Query offset has been pruned"),
        (pb.StreamQueryRequest(queries=[pb.StreamQuery(template_ids=["Iou:Iou"],
                                                       offset="77777")]),
         grpc.StatusCode.OUT_OF_RANGE, "beyond the ledger end"),
        (pb.StreamQueryRequest(queries=[pb.StreamQuery(template_ids=["Iou:Iou"])],
                               offset="x"),
         grpc.StatusCode.INVALID_ARGUMENT, "offset must be a string holding a ledger offset"),
        (pb.StreamQueryRequest(), grpc.StatusCode.INVALID_ARGUMENT, "at least 1 element"),
    ]
    for request, code, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await asyncio.wait_for(grpc_blocks(stub.StreamQuery(request,
                                                                metadata=bearer(ALICE)), 1),
                                   WAIT)
        assert failed.value.code() == code, request
        assert text in (failed.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
        await grpc_blocks(stub.StreamFetch(pb.StreamFetchRequest()), 1)
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_bounded_query_store_reads_cold_contracts_from_redis(
    redis: aioredis.Redis, tmp_path: Path, shared_fixtures: Path,
) -> None:
    settings = LedgerSettings(blob_env={"CAIRN_BLOB_DIR": str(tmp_path / "blobs")},
                              query_store_max_contracts=2)
    ledger = await start_ledger(redis, tmp_path / "blobs", settings=settings,
                                heartbeat_seconds=HEARTBEAT)
    server = StreamServer(ledger.app.streams, LedgerTokenPolicy(),
                          StreamSettings(port=0, heartbeat_seconds=HEARTBEAT))
    await server.start("127.0.0.1")
    try:
        await upload(ledger, (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes())
        created = [active(await create(ledger, "Iou:Iou", {**IOU, "amount": str(n)}))
                   for n in range(1, 6)]
        assert ledger.app.feed.query_store.hot == 2
        everything = await query(ledger, {"templateIds": ["Iou:Iou"]})
        assert everything["result"] == created
        one = await query(ledger, {"templateIds": ["Iou:Iou"], "query": {"amount": "1"}})
        assert one["result"] == created[:1]
        fetched = await fetch(ledger, {"contractId": created[0]["contractId"]})
        assert fetched["result"] == created[0]
        ws = await connect(f"ws://127.0.0.1:{server.port}/v1/stream/query",
                           subprotocols=protocols(ALICE))
        await ws.send(json.dumps({"templateIds": ["Iou:Iou"]}))
        assert [e["created"] for e in (await receive(ws))["events"]] == created
        await ws.close()
    finally:
        await server.close()
        await ledger.stop()


async def test_streams_survive_a_redis_restart_and_say_so_when_redis_lost_its_data(
    redis_process: RedisProcess, tmp_path: Path, shared_fixtures: Path,
) -> None:
    client = redis_connection.connect(redis_process.url)
    ledger = await start_ledger(client, tmp_path / "blobs", heartbeat_seconds=HEARTBEAT)
    server = StreamServer(ledger.app.streams, LedgerTokenPolicy(),
                          StreamSettings(port=0, heartbeat_seconds=HEARTBEAT))
    await server.start("127.0.0.1")
    url = f"ws://127.0.0.1:{server.port}/v1/stream/query"

    async def stream() -> ClientConnection:
        ws = await connect(url, subprotocols=protocols(ALICE))
        await ws.send(json.dumps({"templateIds": ["Iou:Iou"]}))
        return ws

    try:
        await upload(ledger, (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes())
        first = active(await create(ledger, "Iou:Iou", IOU))
        ws = await stream()
        assert (await receive(ws))["events"] == [{"created": first, "matchedQueries": [0]}]
        marker = await receive(ws)
        # Redis stops (cleanly, its AOF complete) and comes back.
        assert redis_process.process is not None
        redis_process.process.terminate()
        redis_process.process.wait(10)
        down = await stream()  # while it is down, a new stream is told to retry
        frame = await receive(down)
        assert frame["status"] == 503 and "unavailable" in frame["errors"][0]
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(down.recv(), WAIT)
        assert down.close_code == 1011
        redis_process.start()
        later = [active(await _retrying(lambda n=n: create(ledger, "Iou:Iou",
                                                           {**IOU, "amount": n})))
                 for n in ("1", "2")]
        # The open stream goes on: exactly the commits made after the restart, in order.
        seen = []
        while len(seen) < 2:
            block = await receive(ws)
            assert "errors" not in block, block
            seen += [e["created"] for e in block["events"]]
        assert seen == later and block["offset"] > marker["offset"]
        again = await stream()
        assert [e["created"] for e in (await receive(again))["events"]] == [first, *later]
        await again.close()
        # Redis loses everything (restarted without its data): the replica rebuilds its query
        # store and ends open streams with an error that says to resume; the ledger is empty.
        redis_process.kill()
        await asyncio.to_thread(_forget_data, tmp_path)
        redis_process.start()
        frame = await receive_until_error(ws)
        assert frame["status"] == 503 and "resume" in frame["errors"][0]
        assert ws.close_code == 1011 or await _closed(ws)
        fresh = await stream()
        assert await receive(fresh) == {"events": [], "offset": None}
        await fresh.close()
    finally:
        await server.close()
        await ledger.stop()
        await client.aclose()


async def _retrying(call: Any) -> Any:
    """A command may meet a connection Redis dropped while it restarted: 503, retried as a
    client would."""
    for _ in range(5):
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.5)
    return await call()


async def receive_until_error(ws: ClientConnection) -> Any:
    """The first error frame, skipping heartbeats; bounded by WAIT per frame."""
    while True:
        frame = await receive(ws)
        if "errors" in frame:
            return frame


async def _closed(ws: ClientConnection) -> bool:
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), WAIT)
    return True


def _forget_data(data_dir: Path) -> None:
    """Delete what a Redis in `data_dir` persisted (its AOF directory and files)."""
    for path in data_dir.iterdir():
        if path.name.startswith(("appendonly", "dump")):
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
            else:
                path.unlink()
