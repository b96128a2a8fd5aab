"""End-to-end: the DAML JSON API v1 (part 1) through the real Envoy, ext_authz and ledger service.

Uses the documentation's example tokens for Alice and Bob against the stack's defaults (sandbox
token mode, ledger id `MyLedger`) and the SDK-compiled fixture DARs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

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
        assert reply.text == exact({"status": 200, "result": 1})
        yield client


def post(api: httpx.Client, path: str, body: Any, token: str = ALICE) -> httpx.Response:
    return api.post(path, content=json.dumps(body),
                    headers={**auth(token), "Content-Type": "application/json"})


def test_documented_iou_create_fetch_and_query(api: httpx.Client) -> None:
    created = post(api, "/v1/create", {"templateId": "Iou:Iou", "payload": IOU,
                                       "meta": {"commandId": "e2e-iou-1"}})
    assert created.status_code == 200, created.text
    assert created.headers["content-type"].startswith("application/json")
    body = created.json()
    contract = body["result"]
    assert body["status"] == 200
    assert contract["payload"] == IOU
    assert contract["signatories"] == ["Alice"] and contract["observers"] == []
    assert contract["agreementText"] == ""
    assert contract["templateId"] == f"{MODEL_TESTS_ID}:Iou:Iou"
    active = {k: v for k, v in contract.items() if k != "completionOffset"}

    fetched = post(api, "/v1/fetch", {"contractId": contract["contractId"]})
    assert fetched.status_code == 200
    assert fetched.text == exact({"status": 200, "result": active})
    missing = post(api, "/v1/fetch", {"contractId": "00" + "ab" * 32})
    assert missing.text == exact({"status": 200, "result": None})

    found = post(api, "/v1/query", {"templateIds": ["Iou:Iou"], "query": {"amount": 999.99}})
    assert active in found.json()["result"]
    assert post(api, "/v1/query", {"templateIds": ["Iou:Iou"],
                                   "query": {"currency": "NOPE"}}).text == exact(
        {"status": 200, "result": []})
    warned = post(api, "/v1/query", {"templateIds": ["Iou:Iou", "UnknownModule:UnknownEntity"],
                                     "query": {"currency": "USD"}})
    assert warned.status_code == 200
    assert warned.json()["warnings"] == {"unknownTemplateIds": ["UnknownModule:UnknownEntity"]}
    assert active in warned.json()["result"]
    unresolved = post(api, "/v1/query", {"templateIds": ["XXX:YYY"]})
    assert unresolved.status_code == 400
    assert unresolved.text == exact({"status": 400, "errors": [
        "Cannot resolve any template ID from request"], "warnings": {
        "unknownTemplateIds": ["XXX:YYY"]}})

    everything = api.get("/v1/query", headers=auth(ALICE))
    assert everything.status_code == 200 and active in everything.json()["result"]
    assert api.get("/v1/query", headers=auth(BOB)).text == exact({"status": 200, "result": []})

    again = post(api, "/v1/create", {"templateId": "Iou:Iou", "payload": IOU,
                                     "meta": {"commandId": "e2e-iou-1"}})
    assert again.status_code == 409


def test_keyed_contract_fetch_by_key_and_duplicate_key(api: httpx.Client) -> None:
    payload = {"tkParty": "Alice", "tkKey": "e2e-key", "tkDisclosedTo": []}
    created = post(api, "/v1/create", {"templateId": "Test:TextKey", "payload": payload})
    assert created.status_code == 200, created.text
    active = {k: v for k, v in created.json()["result"].items() if k != "completionOffset"}
    by_key = post(api, "/v1/fetch", {"templateId": "Test:TextKey",
                                     "key": {"_1": "Alice", "_2": "e2e-key"}})
    assert by_key.text == exact({"status": 200, "result": active})
    absent = post(api, "/v1/fetch", {"templateId": "Test:TextKey", "key": ["Alice", "none"]})
    assert absent.text == exact({"status": 200, "result": None})
    duplicate = post(api, "/v1/create", {"templateId": "Test:TextKey", "payload": payload})
    assert duplicate.status_code == 409
    assert duplicate.json()["status"] == 409
    assert duplicate.json()["errors"][0].startswith("DUPLICATE_CONTRACT_KEY")


def test_parties(api: httpx.Client) -> None:
    allocated = post(api, "/v1/parties/allocate", {"identifierHint": "Carol",
                                                   "displayName": "Carol & Co. LLC"})
    assert allocated.text == exact({"status": 200, "result": {
        "identifier": "Carol", "displayName": "Carol & Co. LLC", "isLocal": True}})
    listed = api.get("/v1/parties", headers=auth(ALICE)).json()
    assert {"identifier": "Carol", "displayName": "Carol & Co. LLC",
            "isLocal": True} in listed["result"]
    some = post(api, "/v1/parties", ["Carol", "Erin"])
    assert some.text == exact({"status": 200, "result": [
        {"identifier": "Carol", "displayName": "Carol & Co. LLC", "isLocal": True}],
        "warnings": {"unknownParties": ["Erin"]}})
    empty = post(api, "/v1/parties", [])
    assert empty.status_code == 400 and empty.json()["status"] == 400


def test_packages_list_and_download(api: httpx.Client) -> None:
    listed = api.get("/v1/packages", headers=auth(ALICE))
    assert listed.status_code == 200
    ids = listed.json()["result"]
    assert MODEL_TESTS_ID in ids and len(ids) > 10
    dalf = api.get(f"/v1/packages/{MODEL_TESTS_ID}", headers=auth(ALICE))
    assert dalf.status_code == 200
    assert dalf.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(dalf.content).hexdigest() == MODEL_TESTS_ID
    unknown = api.get(f"/v1/packages/{'cd' * 32}", headers=auth(ALICE))
    assert unknown.status_code == 404
    assert unknown.json() == {"status": 404, "errors": [f"Package not found: {'cd' * 32}"]}


def test_bad_dar_is_400_and_changes_nothing(api: httpx.Client, shared_fixtures: Path) -> None:
    before = api.get("/v1/packages", headers=auth(ALICE)).json()["result"]
    for name in ("Test-1.5.dar", "CantonExamples.dar", "illformed.dar"):
        reply = api.post("/v1/packages",
                         content=(shared_fixtures / "daml" / name).read_bytes(),
                         headers={**auth(ALICE), "Content-Type": "application/octet-stream"})
        assert reply.status_code == 400, name
        assert reply.json()["status"] == 400
        assert "Unsupported Daml-LF version" in reply.json()["errors"][0]
    assert api.get("/v1/packages", headers=auth(ALICE)).json()["result"] == before


def test_test_dar_templates_round_trip_through_envoy(
    api: httpx.Client, shared_fixtures: Path
) -> None:
    for version in ("1.6", "1.8", "1.11", "1.14", "1.15"):
        dar = (shared_fixtures / "daml" / f"test-{version}.dar").read_bytes()
        uploaded = api.post("/v1/packages", content=dar, headers={
            **auth(ALICE), "Content-Type": "application/octet-stream"})
        assert uploaded.status_code == 200, uploaded.text
    # A value of every kind the codec knows, in canonical output form (Int64 as a number in).
    package = "4ca96bcb21431f25271492a9a89327e2f9ffccc19ac7a1db5f40e0d59c527e8d"  # test-1.15
    cases = {
        "Int64Mod:Box": ({"x": 9007199254740993, "party": "Alice"},
                         {"x": "9007199254740993", "party": "Alice"}),
        "NumericMod:Box": ({"x0": "42", "x10": 1.5, "x17": "0.00000000000000001",
                            "x37": "0.1234", "party": "Alice"},
                           {"x0": "42.0", "x10": "1.5", "x17": "0.00000000000000001",
                            "x37": "0.1234", "party": "Alice"}),
        "OptionMod:Box": ({"party": "Alice"}, {"x": None, "party": "Alice"}),
        "TextMapMod:Box": ({"x": {"b": 2, "a": 1}, "party": "Alice"},
                           {"x": {"a": "1", "b": "2"}, "party": "Alice"}),
        "TimestampMod:Box": ({"x": "2020-01-01T00:00:00.5+01:00", "party": "Alice"},
                             {"x": "2019-12-31T23:00:00.500Z", "party": "Alice"}),
        "VariantMod:Box": ({"x": {"tag": "Left", "value": "-3"}, "party": "Alice"},
                           {"x": {"tag": "Left", "value": "-3"}, "party": "Alice"}),
        "RecordMod:Box": ({"x": ["7", "2.5"], "party": "Alice"},
                          {"x": {"fst": "7", "snd": "2.5"}, "party": "Alice"}),
    }
    for template, (sent, expected) in cases.items():
        created = post(api, "/v1/create", {"templateId": f"{package}:{template}",
                                           "payload": sent})
        assert created.status_code == 200, (template, created.text)
        cid = created.json()["result"]["contractId"]
        fetched = post(api, "/v1/fetch", {"contractId": cid}).json()["result"]
        assert fetched["payload"] == expected, template


def test_tokens_are_checked_at_the_edge(api: httpx.Client) -> None:
    missing = api.get("/v1/query")
    assert missing.status_code == 401
    assert missing.json() == {"status": 401, "errors": [
        "missing Authorization header with OAuth 2.0 Bearer Token"]}
    garbage = api.get("/v1/parties", headers=auth("garbage"))
    assert garbage.status_code == 401 and garbage.json()["status"] == 401


async def test_native_grpc_through_envoy(stack: RunningStack, api: httpx.Client) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        metadata = (("authorization", f"Bearer {ALICE}"),)
        listed = await stub.ListPackages(pb.ListPackagesRequest(), metadata=metadata)
        assert MODEL_TESTS_ID in listed.package_ids
        created = await stub.Create(pb.CreateRequest(
            template_id="Iou:Iou", payload=_value({**IOU, "amount": 3})), metadata=metadata)
        assert created.contract.signatories == ["Alice"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListPackages(pb.ListPackagesRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _value(data: Any) -> Any:
    from google.protobuf import json_format, struct_pb2

    return json_format.ParseDict(data, struct_pb2.Value())
