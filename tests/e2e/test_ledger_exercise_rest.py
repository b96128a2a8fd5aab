"""End-to-end: `/v1/exercise` and `/v1/create-and-exercise` through the real Envoy, ext_authz and
ledger service, on model-tests-1.15.dar with the documentation's Alice and Bob tokens.

The stack is shared with other e2e modules, so assertions name their own contracts and keys
rather than whole query results, and the module archives what it made Bob see when it ends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cairn.auth.ledger_jwt import encode_jwt_hs256
from cairn.ledger.grpc_api import value_to_pb
from cairn.ledger.v1 import ledger_service_pb2 as pb
from cairn.ledger.v1 import ledger_service_pb2_grpc as pb_grpc

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e

ALICE = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJodHRwczovL2RhbWwuY29tL2xlZGdlci1hcGkiOnsibGVkZ2VySWQi"
    "OiJNeUxlZGdlciIsImFwcGxpY2F0aW9uSWQiOiJIVFRQLUpTT04tQVBJLUdhdGV3YXkiLCJhY3RBcyI6WyJBbGljZSJdfX0"
    ".34zzF_fbWv7p60r5s1kKzwndvGdsJDX-W4Xhm4oVdpk"
)
BOB = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJodHRwczovL2RhbWwuY29tL2xlZGdlci1hcGkiOnsibGVkZ2VySWQi"
    "OiJNeUxlZGdlciIsImFwcGxpY2F0aW9uSWQiOiJIVFRQLUpTT04tQVBJLUdhdGV3YXkiLCJhY3RBcyI6WyJCb2IiXX19"
    ".0uPPZtM1AmKvnGixt_Qo53cMDcpnziCjKKiWLvMX2VM"
)
MODEL_TESTS_ID = "41df902af320227f24036cb113173b9133c222b341294544017bbd2534b28d35"
IOU_ID = f"{MODEL_TESTS_ID}:Iou:Iou"
TRANSFER_ID = f"{MODEL_TESTS_ID}:Iou:IouTransfer"
TEXT_KEY_ID = f"{MODEL_TESTS_ID}:Test:TextKey"
IOU = {"issuer": "Alice", "owner": "Alice", "currency": "USD", "amount": "999.99",
       "observers": []}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def api(stack: RunningStack, shared_fixtures: Path) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
        reply = client.post("/v1/packages", content=dar, headers={
            **auth(ALICE), "Content-Type": "application/octet-stream"})
        assert reply.status_code == 200, reply.text
        yield client
        archive_everything_bob_sees(client)


def archive_everything_bob_sees(api: httpx.Client) -> None:
    """Leave the shared stack as other modules expect it: Bob starts out seeing nothing.

    Every contract here is signed by Alice and/or Bob, so both acting together may `Archive` it.
    """
    both = encode_jwt_hs256({"https://daml.com/ledger-api": {
        "ledgerId": "MyLedger", "applicationId": "HTTP-JSON-API-Gateway",
        "actAs": ["Alice", "Bob"]}}, "sandbox tokens are not verified")
    for contract in api.get("/v1/query", headers=auth(BOB)).json()["result"]:
        reply = post(api, "/v1/exercise", {"templateId": contract["templateId"],
                                           "contractId": contract["contractId"],
                                           "choice": "Archive", "argument": {}}, token=both)
        assert reply.status_code == 200, reply.text
    assert api.get("/v1/query", headers=auth(BOB)).text == exact({"status": 200, "result": []})


def post(api: httpx.Client, path: str, body: Any, token: str = ALICE) -> httpx.Response:
    return api.post(path, content=json.dumps(body),
                    headers={**auth(token), "Content-Type": "application/json"})


def ok(reply: httpx.Response) -> Any:
    """The result of a 200 reply, with its completion offset checked and removed."""
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["status"] == 200
    offset = body["result"].pop("completionOffset")
    assert isinstance(offset, str) and offset.isdigit()
    return body["result"]


def new_iou(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    created: dict[str, Any] = ok(post(api, "/v1/create", {"templateId": "Iou:Iou",
                                                          "payload": {**IOU, **fields}}))
    return created


def test_documented_transfer_then_accept(api: httpx.Client) -> None:
    iou = new_iou(api)
    transferred = post(api, "/v1/exercise", {"templateId": "Iou:Iou",
                                             "contractId": iou["contractId"],
                                             "choice": "Iou_Transfer",
                                             "argument": {"newOwner": "Bob"}})
    result = ok(transferred)
    transfer_cid = result["exerciseResult"]
    transfer = {"observers": ["Bob"], "agreementText": "",
                "payload": {"iou": IOU, "newOwner": "Bob"}, "signatories": ["Alice"],
                "contractId": transfer_cid, "templateId": TRANSFER_ID}
    assert result == {"exerciseResult": transfer_cid, "events": [
        {"archived": {"contractId": iou["contractId"], "templateId": IOU_ID}},
        {"created": transfer}]}
    # Byte-exact envelope (key order, compact JSON) apart from the offset.
    offset = transferred.json()["result"]["completionOffset"]
    assert transferred.text == exact({"status": 200, "result": {
        **result, "completionOffset": offset}})
    assert post(api, "/v1/fetch", {"contractId": iou["contractId"]}).text == exact(
        {"status": 200, "result": None})
    assert post(api, "/v1/fetch", {"contractId": transfer_cid}, token=BOB).text == exact(
        {"status": 200, "result": transfer})

    accepted = ok(post(api, "/v1/exercise", {"templateId": "Iou:IouTransfer",
                                             "contractId": transfer_cid,
                                             "choice": "IouTransfer_Accept", "argument": {}},
                       token=BOB))
    bobs = {"observers": [], "agreementText": "", "payload": {**IOU, "owner": "Bob"},
            "signatories": ["Alice", "Bob"], "contractId": accepted["exerciseResult"],
            "templateId": IOU_ID}
    assert accepted["events"] == [
        {"archived": {"contractId": transfer_cid, "templateId": TRANSFER_ID}},
        {"created": bobs}]
    bob_ious = post(api, "/v1/query", {"templateIds": ["Iou:Iou"]}, token=BOB).json()["result"]
    assert bobs in bob_ious


def test_split_and_merge(api: httpx.Client) -> None:
    iou = new_iou(api, amount="100")
    split = ok(post(api, "/v1/exercise", {"templateId": "Iou:Iou",
                                          "contractId": iou["contractId"],
                                          "choice": "Iou_Split",
                                          "argument": {"splitAmount": "40.25"}}))
    halves = split["exerciseResult"]
    assert [e["created"]["payload"]["amount"] for e in split["events"][1:]] == ["40.25",
                                                                                 "59.75"]
    merged = ok(post(api, "/v1/exercise", {"templateId": "Iou:Iou",
                                           "contractId": halves["_1"], "choice": "Iou_Merge",
                                           "argument": {"otherCid": halves["_2"]}}))
    assert [next(iter(e)) for e in merged["events"]] == ["archived", "archived", "created"]
    whole = merged["events"][2]["created"]
    assert whole["contractId"] == merged["exerciseResult"]
    assert whole["payload"]["amount"] == "100.0"
    for gone in (iou["contractId"], halves["_1"], halves["_2"]):
        assert post(api, "/v1/fetch", {"contractId": gone}).json()["result"] is None


def test_exercise_by_key(api: httpx.Client) -> None:
    payload = {"tkParty": "Alice", "tkKey": "e2e-exercise-by-key", "tkDisclosedTo": []}
    created = ok(post(api, "/v1/create", {"templateId": "Test:TextKey", "payload": payload}))
    disclosed = ok(post(api, "/v1/exercise", {
        "templateId": "Test:TextKey", "key": {"_1": "Alice", "_2": "e2e-exercise-by-key"},
        "choice": "TextKeyDisclose", "argument": {"tkNewDisclosedTo": ["Bob"]}}))
    assert disclosed["events"][0] == {"archived": {"contractId": created["contractId"],
                                                   "templateId": TEXT_KEY_ID}}
    successor = disclosed["events"][-1]["created"]
    assert successor["key"] == {"_1": "Alice", "_2": "e2e-exercise-by-key"}
    assert post(api, "/v1/fetch", {"templateId": "Test:TextKey",
                                   "key": ["Alice", "e2e-exercise-by-key"]},
                token=BOB).json()["result"] == successor
    archived = post(api, "/v1/exercise", {"templateId": "Test:TextKey",
                                          "key": ["Alice", "e2e-exercise-by-key"],
                                          "choice": "Archive", "argument": {}})
    assert ok(archived) == {"exerciseResult": {}, "events": [
        {"archived": {"contractId": successor["contractId"], "templateId": TEXT_KEY_ID}}]}
    missing = post(api, "/v1/exercise", {"templateId": "Test:TextKey",
                                         "key": ["Alice", "e2e-exercise-by-key"],
                                         "choice": "Archive", "argument": {}})
    assert missing.status_code == 404
    assert missing.json()["errors"][0].startswith("CONTRACT_KEY_NOT_FOUND")


def test_create_and_exercise(api: httpx.Client) -> None:
    result = ok(post(api, "/v1/create-and-exercise", {"templateId": "Iou:Iou", "payload": IOU,
                                                      "choice": "Iou_Transfer",
                                                      "argument": {"newOwner": "Bob"}}))
    created, archived, transfer = result["events"]
    iou_cid = created["created"]["contractId"]
    assert created["created"]["payload"] == IOU
    assert archived == {"archived": {"contractId": iou_cid, "templateId": IOU_ID}}
    assert transfer["created"]["templateId"] == TRANSFER_ID
    assert result["exerciseResult"] == transfer["created"]["contractId"]
    assert post(api, "/v1/fetch", {"contractId": iou_cid}).json()["result"] is None


def test_errors_in_the_json_api_shape(api: httpx.Client) -> None:
    iou = new_iou(api, observers=["Bob"])
    command = {"templateId": "Iou:Iou", "contractId": iou["contractId"],
               "choice": "Iou_Transfer", "argument": {"newOwner": "Bob"}}
    refused = post(api, "/v1/exercise", command, token=BOB)
    assert refused.status_code == 400
    assert refused.text == exact({"status": 400, "errors": [
        "DAML_AUTHORIZATION_ERROR: Exercise of Iou_Transfer on Iou:Iou requires authorization "
        "from Alice (authorizing parties: Bob)"]})
    archive = {**command, "choice": "Archive", "argument": {}}
    ok(post(api, "/v1/exercise", archive))
    gone = post(api, "/v1/exercise", archive)
    assert gone.status_code == 404
    assert gone.text == exact({"status": 404, "errors": [
        f"CONTRACT_NOT_FOUND: Contract could not be found with id {iou['contractId']}"]})
    no_token = api.post("/v1/exercise", content=json.dumps(archive))
    assert no_token.status_code == 401
    assert no_token.json()["status"] == 401
    malformed = api.post("/v1/create-and-exercise", content=b"{",
                         headers={**auth(ALICE), "Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0].startswith("JSON parser error")


def test_concurrent_consuming_exercises_one_wins(stack: RunningStack,
                                                 api: httpx.Client) -> None:
    iou = new_iou(api)
    command = {"templateId": "Iou:Iou", "contractId": iou["contractId"],
               "choice": "Iou_Transfer", "argument": {"newOwner": "Bob"}}
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def fire() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=60) as client:
            barrier.wait()
            statuses.append(post(client, "/v1/exercise", command).status_code)

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses).count(200) == 1
    assert all(status in (200, 404, 409) for status in statuses)


def test_native_grpc_exercise_through_envoy(stack: RunningStack, api: httpx.Client) -> None:
    iou = new_iou(api)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        reply = stub.Exercise(pb.ExerciseRequest(
            template_id="Iou:Iou", contract_id=iou["contractId"], choice="Archive",
            argument=value_to_pb({})), metadata=(("authorization", f"Bearer {ALICE}"),))
    assert [e.archived.contract_id for e in reply.events] == [iou["contractId"]]
    assert reply.completion_offset.isdigit() and not reply.rest.data
