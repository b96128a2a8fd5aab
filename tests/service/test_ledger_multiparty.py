"""Multi-party commands and reads: `meta.actAs`/`meta.readAs` (subsets of the token's parties),
`readers` on queries, `meta.submissionId` and `meta.deduplicationPeriod` as the JSON API of SDK
2.x takes them. Real gRPC socket, real Redis, model-tests-1.15.dar (an Iou is signed by its
issuer and its owner)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from cairn.auth.ledger_jwt import encode_jwt_hs256
from cairn.ledger.v1 import ledger_service_pb2 as pb

from .test_ledger_exercise import exercise, model
from .test_ledger_service import (
    IOU,
    Ledger,
    bearer,
    create,
    failure,
    ledger,
    model_tests,
    query,
)

__all__ = ["ledger", "model", "model_tests"]  # fixtures


def token(act_as: list[str], read_as: list[str] | None = None) -> str:
    claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger",
                                               "applicationId": "multi-party",
                                               "actAs": act_as, "readAs": read_as or []}}
    return encode_jwt_hs256(claims, "sandbox mode does not check this")


ALICE_AND_BOB = token(["Alice", "Bob"])
SHARED = {**IOU, "owner": "Bob"}  # needs both Alice and Bob to sign


async def test_act_as_names_the_submitting_parties_within_the_tokens(model: Ledger) -> None:
    both = await create(model, "Iou:Iou", SHARED, token=ALICE_AND_BOB,
                        meta={"actAs": ["Alice", "Bob"]})
    assert both["result"]["signatories"] == ["Alice", "Bob"]
    # Without meta the token's actAs applies; with a subset, the other signature is missing.
    assert (await create(model, "Iou:Iou", SHARED, token=ALICE_AND_BOB))["status"] == 200
    status, body = await failure(create(model, "Iou:Iou", SHARED, token=ALICE_AND_BOB,
                                        meta={"actAs": ["Alice"]}))
    assert status == 400 and body["errors"][0].startswith("DAML_AUTHORIZATION_ERROR")
    # A party the token does not grant is refused before anything runs.
    status, body = await failure(create(model, "Iou:Iou", SHARED, token=token(["Alice"]),
                                        meta={"actAs": ["Alice", "Bob"]}))
    assert (status, body["errors"]) == (
        401, ["PERMISSION_DENIED: Claims do not authorize to act as party 'Bob'"])
    status, body = await failure(create(model, "Iou:Iou", IOU, token=token(["Alice"]),
                                        meta={"actAs": []}))
    assert status == 400 and "actAs must be a JSON array with at least 1 element" in \
        body["errors"][0]


async def test_read_as_widens_or_narrows_what_a_command_sees(model: Ledger) -> None:
    iou = (await create(model, "Iou:Iou", IOU))["result"]
    archive = {"templateId": "Iou:Iou", "contractId": iou["contractId"], "choice": "Archive",
               "argument": {}}
    bob_reading_alice = token(["Bob"], ["Alice"])
    # With the token's readAs Bob's command sees Alice's Iou (and is not its controller) ...
    status, body = await failure(exercise(model, archive, token=bob_reading_alice))
    assert status == 400 and body["errors"][0].startswith("DAML_AUTHORIZATION_ERROR")
    # ... with an empty meta.readAs it does not see it at all.
    status, body = await failure(exercise(model, {**archive, "meta": {"readAs": []}},
                                          token=bob_reading_alice))
    assert status == 404 and body["errors"][0].startswith("CONTRACT_NOT_FOUND")
    status, body = await failure(exercise(model, {**archive, "meta": {"readAs": ["Carol"]}},
                                          token=bob_reading_alice))
    assert (status, body["errors"]) == (
        401, ["PERMISSION_DENIED: Claims do not authorize to read data for party 'Carol'"])
    # An actAs party may also be named in readAs.
    done = await exercise(model, {**archive, "meta": {"actAs": ["Alice"],
                                                      "readAs": ["Alice", "Bob"]}},
                          token=token(["Alice", "Bob"]))
    assert done["status"] == 200


async def test_readers_narrow_queries_and_must_be_granted(model: Ledger) -> None:
    await create(model, "Iou:Iou", SHARED, token=ALICE_AND_BOB)
    await create(model, "Iou:Iou", IOU)
    both = token(["Alice"], ["Bob"])
    assert len((await query(model, {"templateIds": ["Iou:Iou"]}, token=both))["result"]) == 2
    only_bob = await query(model, {"templateIds": ["Iou:Iou"], "readers": ["Bob"]}, token=both)
    assert [c["payload"]["owner"] for c in only_bob["result"]] == ["Bob"]
    status, body = await failure(query(model, {"templateIds": ["Iou:Iou"],
                                               "readers": ["Carol"]}, token=both))
    assert (status, body["errors"]) == (401, ["Queried parties not allowed by given JWT "
                                              "token: Carol"])
    typed = await model.stub.Query(pb.QueryRequest(template_ids=["Iou:Iou"], readers=["Bob"]),
                                   metadata=bearer(both))
    assert [c.payload.struct_value["owner"] for c in typed.contracts] == ["Bob"]


async def test_submission_id_is_recorded_in_the_log(model: Ledger) -> None:
    created = await create(model, "Iou:Iou", IOU, meta={"submissionId": "sub-42",
                                                         "commandId": "cmd-42"})
    offset = int(created["result"]["completionOffset"])
    raw = await model.app.store._r.xrange(model.app.store.key("log"), f"{offset}-0",
                                          f"{offset}-0")
    header = json.loads(raw[0][1][b"t"].decode().split("\n")[0])
    assert (header["commandId"], header["submissionId"]) == ("cmd-42", "sub-42")
    status, body = await failure(create(model, "Iou:Iou", IOU, meta={"submissionId": ""}))
    assert status == 400 and "submissionId" in body["errors"][0]


def dedup(kind: str, **fields: Any) -> dict[str, Any]:
    return {"deduplicationPeriod": {"type": kind, **fields}}


async def test_deduplication_periods(model: Ledger) -> None:
    first = await create(model, "Iou:Iou", IOU, meta={"commandId": "again"})
    first_offset = first["result"]["completionOffset"]
    duplicate = "DUPLICATE_COMMAND: A command with the given command id has already been " \
                "successfully processed"
    # The default period is the ledger's maximum (24 h).
    assert await failure(create(model, "Iou:Iou", IOU, meta={"commandId": "again"})) == (
        409, {"status": 409, "errors": [duplicate]})
    await asyncio.sleep(0.05)
    # A short duration lets the same command id through once it has passed.
    short = await create(model, "Iou:Iou", IOU, meta={
        "commandId": "again", **dedup("Duration", durationInMillis=10)})
    assert short["status"] == 200
    # By offset: a duplicate only if an earlier submission was accepted after that offset.
    status, _ = await failure(create(model, "Iou:Iou", IOU, meta={
        "commandId": "again", **dedup("Offset", offset=first_offset)}))
    assert status == 409
    later = await create(model, "Iou:Iou", IOU, meta={
        "commandId": "again", **dedup("Offset", offset=short["result"]["completionOffset"])})
    assert later["status"] == 200
    # Exercises take the same meta.
    status, _ = await failure(exercise(model, {
        "templateId": "Iou:Iou", "contractId": later["result"]["contractId"],
        "choice": "Archive", "argument": {}, "meta": {"commandId": "again"}}))
    assert status == 409  # the change id is (application, actAs, command id)


@pytest.mark.parametrize(("meta", "message"), [
    (dedup("Duration", durationInMillis=86_400_001),
     "INVALID_DEDUPLICATION_PERIOD: The submitted command had an invalid deduplication "
     "period: the deduplication duration of 86400001 ms exceeds the maximum deduplication "
     "duration of 86400000 ms"),
    (dedup("Duration", durationInMillis=-1), "durationInMillis must be a non-negative"),
    (dedup("Duration", durationInMillis="10"), "durationInMillis must be a non-negative"),
    (dedup("Offset", offset="soon"), "offset must be a string holding a ledger offset"),
    (dedup("Sometime"), "deduplicationPeriod must be"),
    ({"actAs": "Alice"}, "actAs must be a JSON array of party identifiers"),
    ({"readAs": [1]}, "readAs must be a JSON array of party identifiers"),
])
async def test_bad_meta_is_400(model: Ledger, meta: dict[str, Any], message: str) -> None:
    status, body = await failure(create(model, "Iou:Iou", IOU, meta=meta))
    assert status == 400
    assert message in body["errors"][0]


async def test_typed_grpc_meta(model: Ledger) -> None:
    request = pb.CreateRequest(
        template_id="Iou:Iou", payload=_value(SHARED),
        meta=pb.CommandMeta(command_id="typed", act_as=["Alice", "Bob"],
                            submission_id="s", deduplication_duration_ms=60_000))
    created = await model.stub.Create(request, metadata=bearer(ALICE_AND_BOB))
    assert list(created.contract.signatories) == ["Alice", "Bob"]
    again = await failure(model.stub.Create(request, metadata=bearer(ALICE_AND_BOB)))
    assert again[0] == 409
    narrowed = pb.CreateRequest(template_id="Iou:Iou", payload=_value(SHARED),
                                meta=pb.CommandMeta(act_as=["Alice"]))
    status, _ = await failure(model.stub.Create(narrowed, metadata=bearer(ALICE_AND_BOB)))
    assert status == 400
    reply = await model.stub.Create(pb.CreateRequest(
        template_id="Iou:Iou", payload=_value(IOU),
        meta=pb.CommandMeta(command_id="typed", deduplication_offset=created.completion_offset)),
        metadata=bearer(token(["Alice"])))
    assert reply.completion_offset > created.completion_offset


def _value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())
