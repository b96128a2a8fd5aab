"""Exercise and create-and-exercise on the ledger service: real gRPC socket, real Redis.

Calls carry the REST marker (as Envoy's transcoded calls do) to check the JSON API's exact
bodies, or none for the typed gRPC surface. Input is the SDK-compiled model-tests-1.15.dar with
the JSON API documentation's Alice and Bob tokens.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from cairn.auth.ledger_jwt import LedgerTokenPolicy, encode_jwt_hs256
from cairn.ledger.codec import JsonCodec
from cairn.ledger.grpc_api import value_to_pb as value_to_pb_dict
from cairn.ledger.lf.ast import Identifier
from cairn.ledger.lf.dar import load_dar
from cairn.ledger.lf.engine import Engine
from cairn.ledger.service import DEFAULT_INLINE_MAX_CALLS
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.store import LedgerStore
from cairn.ledger.v1 import ledger_service_pb2 as pb
from cairn.ledger.view import RedisLedgerView

from .test_ledger_service import (
    ALICE,
    BOB,
    IOU,
    MODEL_TESTS_ID,
    Ledger,
    create,
    failure,
    fetch,
    json_request,
    ledger,
    model_tests,
    query,
    rest,
    rest_error,
    result,
    start_ledger,
    upload,
)

__all__ = ["ledger", "model_tests"]  # fixtures shared with the part-1 tests

IOU_ID = f"{MODEL_TESTS_ID}:Iou:Iou"
TRANSFER_ID = f"{MODEL_TESTS_ID}:Iou:IouTransfer"
TEXT_KEY_ID = f"{MODEL_TESTS_ID}:Test:TextKey"


async def exercise(ledger: Ledger, request: dict[str, Any], token: str = ALICE) -> Any:
    reply = await ledger.stub.Exercise(pb.ExerciseRequest(rest=json_request(request)),
                                       metadata=rest(token))
    return result(reply)


async def create_and_exercise(ledger: Ledger, request: dict[str, Any],
                              token: str = ALICE) -> Any:
    reply = await ledger.stub.CreateAndExercise(
        pb.CreateAndExerciseRequest(rest=json_request(request)), metadata=rest(token))
    return result(reply)


async def new_iou(ledger: Ledger, **fields: Any) -> dict[str, Any]:
    created = (await create(ledger, "Iou:Iou", {**IOU, **fields}))["result"]
    return {k: v for k, v in created.items() if k != "completionOffset"}


def offset_of(body: dict[str, Any]) -> str:
    offset = body["result"].pop("completionOffset")
    assert isinstance(offset, str) and offset.isdigit()
    return offset


@pytest.fixture
async def model(ledger: Ledger, model_tests: bytes) -> Ledger:
    assert await upload(ledger, model_tests) == {"status": 200, "result": 1}
    return ledger


# ---------------------------------------------------------------------- the documented flows
async def test_transfer_then_accept_by_bob(model: Ledger) -> None:
    iou = await new_iou(model)
    transferred = await exercise(model, {"templateId": "Iou:Iou",
                                         "contractId": iou["contractId"],
                                         "choice": "Iou_Transfer",
                                         "argument": {"newOwner": "Bob"}})
    offset_of(transferred)
    assert list(transferred["result"]) == ["exerciseResult", "events"]
    transfer_cid = transferred["result"]["exerciseResult"]
    assert transferred == {"status": 200, "result": {
        "exerciseResult": transfer_cid,
        "events": [
            {"archived": {"contractId": iou["contractId"], "templateId": IOU_ID}},
            {"created": {"observers": ["Bob"], "agreementText": "",
                         "payload": {"iou": IOU, "newOwner": "Bob"},
                         "signatories": ["Alice"], "contractId": transfer_cid,
                         "templateId": TRANSFER_ID}},
        ]}}
    # The consumed Iou is gone; the transfer is visible to both parties.
    assert await fetch(model, {"contractId": iou["contractId"]}) == {"status": 200,
                                                                      "result": None}
    transfer = transferred["result"]["events"][1]["created"]
    assert (await fetch(model, {"contractId": transfer_cid}, token=BOB))["result"] == transfer

    accepted = await exercise(model, {"templateId": "Iou:IouTransfer",
                                      "contractId": transfer_cid,
                                      "choice": "IouTransfer_Accept", "argument": {}},
                              token=BOB)
    offset_of(accepted)
    new_cid = accepted["result"]["exerciseResult"]
    bobs_iou = {"observers": [], "agreementText": "",
                "payload": {**IOU, "owner": "Bob"}, "signatories": ["Alice", "Bob"],
                "contractId": new_cid, "templateId": IOU_ID}
    assert accepted["result"]["events"] == [
        {"archived": {"contractId": transfer_cid, "templateId": TRANSFER_ID}},
        {"created": bobs_iou},
    ]
    assert (await query(model, {"templateIds": ["Iou:Iou"]}, token=BOB))["result"] == [bobs_iou]
    assert (await query(model, {"templateIds": ["Iou:IouTransfer"]}))["result"] == []


@pytest.mark.parametrize("inline_max_calls", [DEFAULT_INLINE_MAX_CALLS, 1, 0])
async def test_exercises_answer_alike_on_the_loop_and_in_a_worker_thread(
        redis: aioredis.Redis, tmp_path: Path, model_tests: bytes, inline_max_calls: int) -> None:
    """A small exercise runs on the event loop with its contract read ahead; a merge, which
    reads a second contract, and every exercise past the inline budget (1) or with the budget 0
    in a worker thread. The outcomes are the same."""
    settings = LedgerSettings(LedgerTokenPolicy(), blob_env={"CAIRN_BLOB_DIR": str(tmp_path)},
                              inline_max_calls=inline_max_calls)
    running = await start_ledger(redis, tmp_path, settings=settings)
    try:
        await upload(running, model_tests)
        iou = await new_iou(running)
        split = await exercise(running, {"templateId": "Iou:Iou", "contractId": iou["contractId"],
                                         "choice": "Iou_Split",
                                         "argument": {"splitAmount": 300}})
        halves = split["result"]["exerciseResult"]
        merged = await exercise(running, {"templateId": "Iou:Iou", "contractId": halves["_1"],
                                          "choice": "Iou_Merge",
                                          "argument": {"otherCid": halves["_2"]}})
        merged_cid = merged["result"]["exerciseResult"]
        assert merged["result"]["events"][2]["created"]["payload"]["amount"] == "999.99"
        moved = await create_and_exercise(running, {
            "templateId": "Iou:Iou", "payload": IOU, "choice": "Iou_Transfer",
            "argument": {"newOwner": "Bob"}})
        transfer = moved["result"]["exerciseResult"]
        accepted = await exercise(running, {"templateId": "Iou:IouTransfer",
                                            "contractId": transfer,
                                            "choice": "IouTransfer_Accept", "argument": {}},
                                  token=BOB)
        bobs = accepted["result"]["events"][-1]["created"]
        assert bobs["payload"]["owner"] == "Bob" and bobs["signatories"] == ["Alice", "Bob"]
        status, error = await failure(exercise(running, {
            "templateId": "Iou:Iou", "contractId": halves["_1"], "choice": "Archive",
            "argument": {}}))
        assert status == 404 and "CONTRACT_NOT_FOUND" in error["errors"][0]
        remaining = (await query(running, {"templateIds": ["Iou:Iou"]}))["result"]
        assert [c["contractId"] for c in remaining] == [merged_cid, bobs["contractId"]]
    finally:
        await running.stop()


async def test_split_then_merge(model: Ledger) -> None:
    iou = await new_iou(model)
    split = await exercise(model, {"templateId": "Iou:Iou", "contractId": iou["contractId"],
                                   "choice": "Iou_Split", "argument": {"splitAmount": 300}})
    offset_of(split)
    halves = split["result"]["exerciseResult"]
    assert set(halves) == {"_1", "_2"}
    events = split["result"]["events"]
    assert events[0] == {"archived": {"contractId": iou["contractId"], "templateId": IOU_ID}}
    assert [(e["created"]["contractId"], e["created"]["payload"]["amount"])
            for e in events[1:]] == [(halves["_1"], "300.0"), (halves["_2"], "699.99")]

    merged = await exercise(model, {"templateId": "Iou:Iou", "contractId": halves["_1"],
                                    "choice": "Iou_Merge",
                                    "argument": {"otherCid": halves["_2"]}})
    offset_of(merged)
    merged_cid = merged["result"]["exerciseResult"]
    kinds = [(next(iter(e)), next(iter(e.values()))["contractId"])
             for e in merged["result"]["events"]]
    # Merge archives itself, then (a nested Archive) the other half, then creates the sum.
    assert kinds == [("archived", halves["_1"]), ("archived", halves["_2"]),
                     ("created", merged_cid)]
    assert merged["result"]["events"][2]["created"]["payload"]["amount"] == "999.99"
    remaining = (await query(model, {"templateIds": ["Iou:Iou"]}))["result"]
    assert [c["contractId"] for c in remaining] == [merged_cid]


async def test_exercise_by_key_archives_and_frees_the_key(model: Ledger) -> None:
    payload = {"tkParty": "Alice", "tkKey": "by-key", "tkDisclosedTo": ["Bob"]}
    created = (await create(model, "Test:TextKey", payload))["result"]
    archived = await exercise(model, {"templateId": "Test:TextKey",
                                      "key": {"_1": "Alice", "_2": "by-key"},
                                      "choice": "Archive", "argument": {}})
    offset_of(archived)
    assert archived == {"status": 200, "result": {"exerciseResult": {}, "events": [
        {"archived": {"contractId": created["contractId"], "templateId": TEXT_KEY_ID}}]}}
    assert (await fetch(model, {"templateId": "Test:TextKey",
                                "key": ["Alice", "by-key"]}))["result"] is None
    # The key is free again, and exercising by the now-missing key is a 404.
    status, error = await failure(exercise(model, {"templateId": "Test:TextKey",
                                                   "key": ["Alice", "by-key"],
                                                   "choice": "Archive", "argument": {}}))
    assert status == 404 and error["errors"][0].startswith("CONTRACT_KEY_NOT_FOUND")
    again = (await create(model, "Test:TextKey", payload))["result"]
    assert again["key"] == {"_1": "Alice", "_2": "by-key"}


async def test_keyed_choice_that_recreates_under_the_same_key(model: Ledger) -> None:
    payload = {"tkParty": "Alice", "tkKey": "disclose", "tkDisclosedTo": []}
    created = (await create(model, "Test:TextKey", payload))["result"]
    disclosed = await exercise(model, {"templateId": "Test:TextKey",
                                       "contractId": created["contractId"],
                                       "choice": "TextKeyDisclose",
                                       "argument": {"tkNewDisclosedTo": ["Bob"]}})
    offset_of(disclosed)
    events = disclosed["result"]["events"]
    assert events[0] == {"archived": {"contractId": created["contractId"],
                                      "templateId": TEXT_KEY_ID}}
    successor = events[-1]["created"]
    assert successor["observers"] == ["Bob"] and successor["key"] == created["key"]
    # The key index follows the archive and the create of one transaction.
    assert (await fetch(model, {"templateId": "Test:TextKey", "key": ["Alice", "disclose"]},
                        token=BOB))["result"] == successor


async def test_create_and_exercise_reports_the_transient_contract(model: Ledger) -> None:
    body = await create_and_exercise(model, {"templateId": "Iou:Iou", "payload": IOU,
                                             "choice": "Iou_Transfer",
                                             "argument": {"newOwner": "Bob"}})
    offset_of(body)
    events = body["result"]["events"]
    iou = events[0]["created"]
    assert iou == {"observers": [], "agreementText": "", "payload": IOU,
                   "signatories": ["Alice"], "contractId": iou["contractId"],
                   "templateId": IOU_ID}
    assert events[1] == {"archived": {"contractId": iou["contractId"], "templateId": IOU_ID}}
    transfer = events[2]["created"]
    assert transfer["templateId"] == TRANSFER_ID and transfer["observers"] == ["Bob"]
    assert body["result"]["exerciseResult"] == transfer["contractId"]
    assert len(events) == 3
    # Only the transfer is on the ledger afterwards.
    assert await fetch(model, {"contractId": iou["contractId"]}) == {"status": 200,
                                                                      "result": None}
    assert (await fetch(model, {"contractId": transfer["contractId"]}))["result"] == transfer


# ---------------------------------------------------------------------- rules and errors
async def test_a_consumed_contract_cannot_be_exercised_again(model: Ledger) -> None:
    iou = await new_iou(model)
    command = {"templateId": "Iou:Iou", "contractId": iou["contractId"], "choice": "Archive",
               "argument": {}}
    archived = await exercise(model, command)
    assert archived["result"]["exerciseResult"] == {}
    assert archived["result"]["events"] == [
        {"archived": {"contractId": iou["contractId"], "templateId": IOU_ID}}]
    assert (await fetch(model, {"contractId": iou["contractId"]}))["result"] is None
    assert await failure(exercise(model, command)) == (404, {"status": 404, "errors": [
        f"CONTRACT_NOT_FOUND: Contract could not be found with id {iou['contractId']}"]})


async def test_non_controllers_are_refused(model: Ledger) -> None:
    # Bob can see this Iou (observer) but only its owner Alice controls Iou_Transfer.
    iou = await new_iou(model, observers=["Bob"])
    command = {"templateId": "Iou:Iou", "contractId": iou["contractId"],
               "choice": "Iou_Transfer", "argument": {"newOwner": "Bob"}}
    status, error = await failure(exercise(model, command, token=BOB))
    assert status == 400
    assert error["errors"] == [
        "DAML_AUTHORIZATION_ERROR: Exercise of Iou_Transfer on Iou:Iou requires authorization "
        "from Alice (authorizing parties: Bob)"]
    # A party that cannot see the contract is told it does not exist.
    private = await new_iou(model)
    status, error = await failure(exercise(model, {**command,
                                                   "contractId": private["contractId"]},
                                           token=BOB))
    assert (status, error["errors"]) == (404, [
        f"CONTRACT_NOT_FOUND: Contract could not be found with id {private['contractId']}"])
    # Nothing changed for Alice.
    assert (await fetch(model, {"contractId": iou["contractId"]}))["result"] == iou


async def test_concurrent_consuming_exercises_commit_once(model: Ledger) -> None:
    iou = await new_iou(model)
    command = {"templateId": "Iou:Iou", "contractId": iou["contractId"],
               "choice": "Iou_Transfer", "argument": {"newOwner": "Bob"}}
    outcomes = await asyncio.gather(*(exercise(model, command) for _ in range(12)),
                                    return_exceptions=True)
    winners = [o for o in outcomes if isinstance(o, dict)]
    assert len(winners) == 1
    losers = [rest_error(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(losers) == 11
    # Losers either raced the commit (409) or interpreted after it (404).
    assert all(status in (404, 409) for status, _ in losers)
    assert all(body["errors"][0].startswith(("INCONSISTENT", "CONTRACT_NOT_FOUND"))
               for _, body in losers)
    transfers = (await query(model, {"templateIds": ["Iou:IouTransfer"]}))["result"]
    assert [t["contractId"] for t in transfers] == [winners[0]["result"]["exerciseResult"]]


async def test_command_ids_deduplicate_exercises(model: Ledger) -> None:
    command = {"templateId": "Iou:Iou", "payload": IOU, "choice": "Iou_Transfer",
               "argument": {"newOwner": "Bob"}, "meta": {"commandId": "cae-1"}}
    await create_and_exercise(model, command)
    assert await failure(create_and_exercise(model, command)) == (409, {
        "status": 409, "errors": ["DUPLICATE_COMMAND: A command with the given command id "
                                  "has already been successfully processed"]})
    assert len((await query(model, {"templateIds": ["Iou:IouTransfer"]}))["result"]) == 1


@pytest.mark.parametrize(("command", "status", "message"), [
    ({"templateId": "Iou:Iou", "choice": "Archive", "argument": {}}, 400,
     "ContractLocator requires either key or contractId field"),
    ({"templateId": "Iou:Iou", "contractId": "x", "key": "k", "choice": "Archive",
      "argument": {}}, 400, "ContractLocator requires either key or contractId field"),
    ({"templateId": "Iou:Iou", "contractId": "x", "choice": "Archive"}, 400,
     "an exercise command requires argument"),
    ({"templateId": "Iou:Nope", "contractId": "x", "choice": "Archive", "argument": {}}, 400,
     "Cannot resolve template ID, given: Iou:Nope"),
    ({"templateId": "Iou:Iou", "contractId": "x", "choice": "Nope", "argument": {}}, 400,
     "Cannot resolve Choice Argument type, given: (Iou:Iou, Nope)"),
    ({"templateId": "Iou:Iou", "contractId": "x", "choice": "Iou_Transfer",
      "argument": {"newOwner": ""}}, 400, "Daml-LF Party is empty"),
    ({"templateId": "Iou:Iou", "key": "k", "choice": "Archive", "argument": {}}, 400,
     f"Cannot resolve Template Key type, given: {IOU_ID}"),
    ({"templateId": "Iou:Iou", "contractId": "00" + "ab" * 32, "choice": "Archive",
      "argument": {}}, 404,
     "CONTRACT_NOT_FOUND: Contract could not be found with id 00" + "ab" * 32),
    ({"templateId": "Iou:Iou", "contractId": "x", "choice": "Archive", "argument": {},
      "choiceInterfaceId": "Nope:Nope"}, 400, "Cannot resolve interface ID, given: Nope:Nope"),
])
async def test_bad_exercise_commands(model: Ledger, command: dict[str, Any], status: int,
                                     message: str) -> None:
    got_status, error = await failure(exercise(model, command))
    assert got_status == status
    assert message in error["errors"][0]


async def test_wrong_template_for_the_contract_is_rejected(model: Ledger) -> None:
    iou = await new_iou(model)
    status, error = await failure(exercise(model, {
        "templateId": "Iou:IouTransfer", "contractId": iou["contractId"],
        "choice": "Archive", "argument": {}}))
    assert status == 400
    assert error["errors"] == [f"DAML_INTERPRETER_INVALID_ARGUMENT: Contract "
                               f"{iou['contractId']} is of template Iou:Iou, expected "
                               f"Iou:IouTransfer"]
    assert (await fetch(model, {"contractId": iou["contractId"]}))["result"] == iou


async def test_read_as_widens_what_a_command_may_see(model: Ledger) -> None:
    """A readAs party makes Alice's contract visible to Bob's command (an authorization error
    instead of the not-found a plain Bob token gets); it does not make Bob a controller."""
    iou = await new_iou(model)
    claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger",
                                               "applicationId": "HTTP-JSON-API-Gateway",
                                               "actAs": ["Bob"], "readAs": ["Alice"]}}
    bob_reading_alice = encode_jwt_hs256(claims, "any secret")
    status, error = await failure(exercise(model, {
        "templateId": "Iou:Iou", "contractId": iou["contractId"], "choice": "Archive",
        "argument": {}}, token=bob_reading_alice))
    assert status == 400 and error["errors"][0].startswith("DAML_AUTHORIZATION_ERROR")


# ---------------------------------------------------------------------- typed gRPC
async def test_typed_grpc_exercise_and_create_and_exercise(model: Ledger) -> None:
    metadata = (("authorization", f"Bearer {ALICE}"),)
    made = await model.stub.CreateAndExercise(pb.CreateAndExerciseRequest(
        template_id="Iou:Iou", payload=value_to_pb_dict(IOU), choice="Iou_Split",
        argument=value_to_pb_dict({"splitAmount": "0.5"}),
        meta=pb.CommandMeta(command_id="typed-1")), metadata=metadata)
    assert made.completion_offset.isdigit() and not made.rest.data
    assert [e.WhichOneof("kind") for e in made.events] == ["created", "archived", "created",
                                                           "created"]
    first = made.exercise_result.struct_value.fields["_1"].string_value
    assert made.events[2].created.contract_id == first
    assert made.events[2].created.payload.struct_value.fields["amount"].string_value == "0.5"
    assert made.events[1].archived.template_id == IOU_ID

    archived = await model.stub.Exercise(pb.ExerciseRequest(
        template_id=IOU_ID, contract_id=first, choice="Archive",
        argument=value_to_pb_dict({})), metadata=metadata)
    assert archived.exercise_result.struct_value.fields == {}
    assert [e.archived.contract_id for e in archived.events] == [first]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await model.stub.Exercise(pb.ExerciseRequest(
            template_id=IOU_ID, contract_id=first, choice="Archive"), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "argument is required" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await model.stub.Exercise(pb.ExerciseRequest(
            template_id=IOU_ID, contract_id=first, choice="Archive",
            argument=value_to_pb_dict({})), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_exercise_needs_a_command_token(model: Ledger) -> None:
    claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger",
                                               "applicationId": "HTTP-JSON-API-Gateway",
                                               "readAs": ["Alice"]}}
    reader = encode_jwt_hs256(claims, "any secret")
    iou = await new_iou(model)
    assert await failure(exercise(model, {"templateId": "Iou:Iou",
                                          "contractId": iou["contractId"],
                                          "choice": "Archive", "argument": {}},
                                  token=reader)) == (401, {
        "status": 401, "errors": ["Expected one or more parties in actAs but got none"]})


# ---------------------------------------------------------------------- interfaces
async def test_interface_choices_resolve_as_the_json_api_does(
    ledger: Ledger, shared_fixtures: Path
) -> None:
    """semantic-tests' Interface:T has its own MyArchive and inherits one from Interface1:I."""
    await upload(ledger, (shared_fixtures / "daml" / "semantic-tests-1.15.dar").read_bytes())

    async def exercise_my_archive(**extra: Any) -> Any:
        created = (await create(ledger, "Interface:T", {"owner": "Alice"}))["result"]
        body = await exercise(ledger, {"templateId": "Interface:T",
                                       "contractId": created["contractId"],
                                       "choice": "MyArchive", "argument": {}, **extra})
        assert body["result"]["events"] == [{"archived": {
            "contractId": created["contractId"], "templateId": created["templateId"]}}]
        return body["result"]["exerciseResult"]

    # The template's own choice wins without choiceInterfaceId; the interface's with it.
    assert await exercise_my_archive() == "Interface.T"
    assert await exercise_my_archive(choiceInterfaceId="Interface1:I") == "Interface1.I"


# ---------------------------------------------------------------------- the Redis ledger view
async def test_redis_ledger_view_reads_contracts_and_keys_from_a_worker_thread(
    model: Ledger, redis: aioredis.Redis, model_tests: bytes
) -> None:
    dar = load_dar(model_tests)
    codec = JsonCodec(Engine(dar.packages.values()).packages)
    view = RedisLedgerView(LedgerStore(redis), codec, asyncio.get_running_loop())
    payload = {"tkParty": "Alice", "tkKey": "view", "tkDisclosedTo": ["Bob"]}
    created = (await create(model, "Test:TextKey", payload))["result"]
    template_id = Identifier(MODEL_TESTS_ID, "Test", "TextKey")

    def read() -> tuple[Any, ...]:
        contract = view.lookup_contract(created["contractId"])
        key = codec.decode(Engine(dar.packages.values()).key_type(template_id),
                           ["Alice", "view"])
        return (contract, view.lookup_contract("00" + "cd" * 32),
                view.lookup_key(template_id, key))

    contract, missing, holder = await asyncio.to_thread(read)
    assert contract is not None and missing is None
    assert contract.template_id == template_id and contract.observers == ("Bob",)
    assert codec.encode_contract(contract)["payload"] == payload
    assert holder == created["contractId"]
    # On the loop itself a synchronous lookup would deadlock: it is refused instead.
    with pytest.raises(RuntimeError, match="worker thread"):
        view.lookup_contract("00" + "ef" * 32)


async def test_an_interface_id_as_the_exercise_target(
    ledger: Ledger, shared_fixtures: Path
) -> None:
    await upload(ledger, (shared_fixtures / "daml" / "semantic-tests-1.15.dar").read_bytes())
    created = (await create(ledger, "Interface:T", {"owner": "Alice"}))["result"]
    body = await exercise(ledger, {"templateId": "Interface1:I",
                                   "contractId": created["contractId"],
                                   "choice": "MyArchive", "argument": {}})
    assert body["result"]["exerciseResult"] == "Interface1.I"
    # The archived event names the contract's template, not the interface.
    assert body["result"]["events"] == [{"archived": {
        "contractId": created["contractId"], "templateId": created["templateId"]}}]
    status, error = await failure(exercise(ledger, {"templateId": "Interface1:I",
                                                    "key": {"_1": "Alice", "_2": "x"},
                                                    "choice": "MyArchive", "argument": {}}))
    assert status == 400 and "Exercise by key needs a template ID" in error["errors"][0]
