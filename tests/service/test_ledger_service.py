"""The ledger service over real gRPC sockets with a real Redis and blob directory.

Calls carry the REST marker (as Envoy's transcoded calls do) to check the JSON API's exact
bodies, or none to check the typed gRPC surface. Inputs are the SDK-compiled fixture DARs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import redis.asyncio as aioredis
from google.api import httpbody_pb2

from cairn.auth.ledger_jwt import (
    CLAIMS_HEADER,
    LedgerClaims,
    LedgerTokenPolicy,
    encode_jwt_hs256,
    sign_claims,
)
from cairn.ledger.app import LedgerApp
from cairn.ledger.feed import feed_redis
from cairn.ledger.lf.ast import PrimType, TBuiltin, TCon, TNat, Type
from cairn.ledger.lf.dar import load_dar
from cairn.ledger.lf.packages import PackageSet
from cairn.ledger.service import DEFAULT_INLINE_MAX_CALLS, INLINE_MAX_VALUES
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.v1 import ledger_service_pb2 as pb
from cairn.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.rest import REST_MARKER
from cairn.runtime.server import RunningServer, start_server

INTERNAL_SECRET = "test-internal-secret"
# The JSON API documentation's example tokens (ledger MyLedger, HTTP-JSON-API-Gateway).
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
TEST_DARS = ["1.6", "1.7", "1.8", "1.11", "1.12", "1.13", "1.14", "1.15"]


# ---------------------------------------------------------------------- helpers
@dataclass
class Ledger:
    server: RunningServer
    channel: grpc.aio.Channel
    app: LedgerApp
    feed_redis: aioredis.Redis

    @property
    def stub(self) -> pb_grpc.LedgerServiceAsyncStub:
        return pb_grpc.LedgerServiceStub(self.channel)

    async def stop(self) -> None:
        await self.channel.close(None)
        await self.server.stop(0)
        await self.app.close()
        await self.feed_redis.aclose()


async def start_ledger(redis: aioredis.Redis, blob_dir: Path,
                       policy: LedgerTokenPolicy | None = None,
                       settings: LedgerSettings | None = None,
                       heartbeat_seconds: float = 5.0) -> Ledger:
    """The ledger servicer (with its query store and feed) on a real socket."""
    settings = settings or LedgerSettings(policy or LedgerTokenPolicy(),
                                          blob_env={"CAIRN_BLOB_DIR": str(blob_dir)})
    where = redis.get_connection_kwargs()
    feed_client = feed_redis(f"redis://{where['host']}:{where['port']}/{where.get('db', 0)}")
    app = await LedgerApp.start(redis, feed_client, settings, INTERNAL_SECRET, heartbeat_seconds)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_LedgerServiceServicer_to_server(app.api, server)

    server = await start_server(register=register, services=["cairn.ledger.v1.LedgerService"],
                                style=ErrorStyle.LEDGER)
    return Ledger(server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"), app,
                  feed_client)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def rest(token: str) -> tuple[tuple[str, str], ...]:
    """Metadata of a call Envoy transcoded from REST."""
    return (*bearer(token), (REST_MARKER, "1"))


def json_request(data: Any) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(data).encode())


def result(reply: Any) -> Any:
    """The parsed REST body of a reply."""
    return json.loads(reply.rest.data)


def rest_error(err: grpc.aio.AioRpcError) -> tuple[int, Any]:
    """The HTTP status and JSON body Envoy gives a REST client for a failed call."""
    trailers: dict[str, Any] = dict(cast(Any, err.trailing_metadata() or ()))
    return int(trailers["x-http-status"]), json.loads(trailers["x-http-body"])


async def upload(ledger: Ledger, dar: bytes, token: str = ALICE) -> Any:
    reply = await ledger.stub.UploadDarFile(
        pb.UploadDarFileRequest(rest=httpbody_pb2.HttpBody(
            content_type="application/octet-stream", data=dar)),
        metadata=rest(token))
    return result(reply)


async def create(ledger: Ledger, template_id: str, payload: Any, token: str = ALICE,
                 **extra: Any) -> Any:
    reply = await ledger.stub.Create(
        pb.CreateRequest(rest=json_request({"templateId": template_id, "payload": payload,
                                            **extra})),
        metadata=rest(token))
    return result(reply)


async def fetch(ledger: Ledger, request: Any, token: str = ALICE) -> Any:
    reply = await ledger.stub.Fetch(pb.FetchRequest(rest=json_request(request)),
                                    metadata=rest(token))
    return result(reply)


async def query(ledger: Ledger, request: Any, token: str = ALICE) -> Any:
    reply = await ledger.stub.Query(pb.QueryRequest(rest=json_request(request)),
                                    metadata=rest(token))
    return result(reply)


async def failure(call: Any) -> tuple[int, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return rest_error(caught.value)


@pytest.fixture
async def ledger(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Ledger]:
    running = await start_ledger(redis, tmp_path / "blobs")
    yield running
    await running.stop()


@pytest.fixture
def model_tests(shared_fixtures: Path) -> bytes:
    return (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()


# ---------------------------------------------------------------------- packages
async def test_upload_lists_and_serves_every_package_of_the_dar(
    ledger: Ledger, model_tests: bytes
) -> None:
    assert await upload(ledger, model_tests) == {"status": 200, "result": 1}
    expected = load_dar(model_tests)
    listed = result(await ledger.stub.ListPackages(pb.ListPackagesRequest(),
                                                   metadata=rest(ALICE)))
    assert listed["status"] == 200
    assert set(listed["result"]) == set(expected.packages)
    assert MODEL_TESTS_ID in listed["result"]
    chunks = [c async for c in ledger.stub.GetPackage(
        pb.GetPackageRequest(package_id=MODEL_TESTS_ID), metadata=rest(ALICE))]
    assert {c.content_type for c in chunks} == {"application/octet-stream"}
    assert hashlib.sha256(b"".join(c.data for c in chunks)).hexdigest() == MODEL_TESTS_ID
    typed = await ledger.stub.ListPackages(pb.ListPackagesRequest(), metadata=bearer(ALICE))
    assert list(typed.package_ids) == listed["result"]


async def test_uploading_the_same_dar_twice_is_harmless(
    ledger: Ledger, model_tests: bytes
) -> None:
    await upload(ledger, model_tests)
    first = await ledger.stub.ListPackages(pb.ListPackagesRequest(), metadata=bearer(ALICE))
    assert await upload(ledger, model_tests) == {"status": 200, "result": 1}
    again = await ledger.stub.ListPackages(pb.ListPackagesRequest(), metadata=bearer(ALICE))
    assert list(again.package_ids) == list(first.package_ids)
    native = await ledger.stub.UploadDarFile(pb.UploadDarFileRequest(dar_file=model_tests),
                                             metadata=bearer(ALICE))
    assert native.main_package_id == MODEL_TESTS_ID


@pytest.mark.parametrize(("dar", "message"), [
    ("Test-1.5.dar", "Unsupported Daml-LF version 1.5"),
    ("test-1.17.dar", "Unsupported Daml-LF version 1.17"),
    ("CantonExamples.dar", "Unsupported Daml-LF version 2.1"),
    ("illformed.dar", "Unsupported Daml-LF version 2.1"),
])
async def test_bad_dars_are_rejected_with_400_and_change_nothing(
    ledger: Ledger, model_tests: bytes, shared_fixtures: Path, dar: str, message: str,
    tmp_path: Path,
) -> None:
    await upload(ledger, model_tests)
    before = await ledger.stub.ListPackages(pb.ListPackagesRequest(), metadata=bearer(ALICE))
    blobs_before = sorted(p.name for p in (tmp_path / "blobs").rglob("*"))
    status, error = await failure(upload(ledger, (shared_fixtures / "daml" / dar).read_bytes()))
    assert status == 400
    assert error["status"] == 400
    assert message in error["errors"][0]
    after = await ledger.stub.ListPackages(pb.ListPackagesRequest(), metadata=bearer(ALICE))
    assert list(after.package_ids) == list(before.package_ids)
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*")) == blobs_before


async def test_not_a_zip_and_an_empty_body_are_400(ledger: Ledger) -> None:
    assert await failure(upload(ledger, b"PK not really")) == (
        400, {"status": 400, "errors": ["Invalid DAR: not a zip archive"]})
    assert (await failure(upload(ledger, b"")))[0] == 400


async def test_unknown_package_is_404(ledger: Ledger) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in ledger.stub.GetPackage(pb.GetPackageRequest(package_id="ab" * 32),
                                              metadata=rest(ALICE)):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert rest_error(caught.value) == (
        404, {"status": 404, "errors": [f"Package not found: {'ab' * 32}"]})


# ---------------------------------------------------------------------- create, fetch, query
async def test_documented_iou_create_fetch_and_query(ledger: Ledger, model_tests: bytes) -> None:
    await upload(ledger, model_tests)
    created = await create(ledger, "Iou:Iou", IOU, meta={"commandId": "a unique ID"})
    assert created["status"] == 200
    contract = created["result"]
    assert list(contract) == ["observers", "agreementText", "payload", "signatories",
                              "contractId", "templateId", "completionOffset"]
    assert contract["payload"] == IOU
    assert contract["signatories"] == ["Alice"]
    assert contract["observers"] == []
    assert contract["agreementText"] == ""
    assert contract["templateId"] == f"{MODEL_TESTS_ID}:Iou:Iou"
    assert contract["contractId"].startswith("00")
    active = {k: v for k, v in contract.items() if k != "completionOffset"}

    fetched = await fetch(ledger, {"contractId": contract["contractId"]})
    assert fetched == {"status": 200, "result": active}
    assert await fetch(ledger, {"contractId": contract["contractId"]}, token=BOB) == {
        "status": 200, "result": None}
    assert await fetch(ledger, {"contractId": "00" + "0" * 64}) == {"status": 200,
                                                                    "result": None}

    everything = result(await ledger.stub.QueryAll(pb.QueryAllRequest(), metadata=rest(ALICE)))
    assert everything == {"status": 200, "result": [active]}
    bobs = result(await ledger.stub.QueryAll(pb.QueryAllRequest(), metadata=rest(BOB)))
    assert bobs == {"status": 200, "result": []}

    assert await query(ledger, {"templateIds": ["Iou:Iou"]}) == {"status": 200,
                                                                 "result": [active]}
    # Numeric filters accept numbers and strings alike.
    for amount in (999.99, "999.99", {"%gt": 999, "%lte": "999.99"}):
        assert await query(ledger, {"templateIds": ["Iou:Iou"],
                                    "query": {"amount": amount}}) == {"status": 200,
                                                                      "result": [active]}
    assert await query(ledger, {"templateIds": ["Iou:Iou"], "query": {"currency": "EUR"}}) == {
        "status": 200, "result": []}
    assert await query(ledger, {"templateIds": ["Iou:Iou", "UnknownModule:UnknownEntity"],
                                "query": {"currency": "USD"}}) == {
        "status": 200, "result": [active],
        "warnings": {"unknownTemplateIds": ["UnknownModule:UnknownEntity"]}}
    assert await failure(query(ledger, {"templateIds": ["XXX:YYY", "AAA:BBB"]})) == (400, {
        "status": 400, "errors": ["Cannot resolve any template ID from request"],
        "warnings": {"unknownTemplateIds": ["XXX:YYY", "AAA:BBB"]}})


async def test_typed_grpc_create_fetch_and_query(ledger: Ledger, model_tests: bytes) -> None:
    from google.protobuf import json_format, struct_pb2

    await upload(ledger, model_tests)
    payload = json_format.ParseDict({**IOU, "amount": 12.5}, struct_pb2.Value())
    created = await ledger.stub.Create(
        pb.CreateRequest(template_id="Iou:Iou", payload=payload), metadata=bearer(ALICE))
    assert created.contract.template_id == f"{MODEL_TESTS_ID}:Iou:Iou"
    assert json_format.MessageToDict(created.contract.payload)["amount"] == "12.5"
    assert not created.contract.HasField("key")
    fetched = await ledger.stub.Fetch(pb.FetchRequest(contract_id=created.contract.contract_id),
                                      metadata=bearer(ALICE))
    assert fetched.contract == created.contract
    missing = await ledger.stub.Fetch(pb.FetchRequest(contract_id="00" + "1" * 64),
                                      metadata=bearer(ALICE))
    assert not missing.HasField("contract")
    query_struct = struct_pb2.Struct()
    query_struct.update({"amount": {"%lt": 13}})
    found = await ledger.stub.Query(
        pb.QueryRequest(template_ids=["Iou:Iou", "No:Such"], query=query_struct),
        metadata=bearer(ALICE))
    assert [c.contract_id for c in found.contracts] == [created.contract.contract_id]
    assert list(found.unknown_template_ids) == ["No:Such"]


@pytest.mark.parametrize("inline_max_calls", [DEFAULT_INLINE_MAX_CALLS, 1, 0])
async def test_creates_answer_alike_on_the_loop_and_in_a_worker_thread(
        redis: aioredis.Redis, tmp_path: Path, model_tests: bytes, inline_max_calls: int) -> None:
    """A small create is interpreted on the event loop; one with a large payload, one that
    needs more engine calls than the inline budget (an Iou create makes 22; budget 1), and every
    one with the budget 0 in a worker thread. The replies are the same."""
    settings = LedgerSettings(LedgerTokenPolicy(), blob_env={"CAIRN_BLOB_DIR": str(tmp_path)},
                              inline_max_calls=inline_max_calls)
    running = await start_ledger(redis, tmp_path, settings=settings)
    try:
        await upload(running, model_tests)
        crowd = [f"Observer{i}" for i in range(INLINE_MAX_VALUES)]  # past the inline size
        for payload in (IOU, {**IOU, "observers": crowd}):
            created = await create(running, "Iou:Iou", payload)
            contract = created["result"]
            assert contract["payload"] == payload
            assert contract["signatories"] == ["Alice"]
            assert contract["observers"] == sorted(payload["observers"])
            active = {k: v for k, v in contract.items() if k != "completionOffset"}
            assert await fetch(running, {"contractId": contract["contractId"]}) == {
                "status": 200, "result": active}
        status, error = await failure(create(running, "Iou:Iou", {**IOU, "amount": "x"}))
        assert status == 400 and "amount" in error["errors"][0]
    finally:
        await running.stop()


async def test_create_errors_are_json_api_shaped(ledger: Ledger, model_tests: bytes) -> None:
    await upload(ledger, model_tests)
    assert await failure(create(ledger, "Iou:Nope", IOU)) == (
        400, {"status": 400, "errors": ["Cannot resolve template ID, given: Iou:Nope"]})
    status, error = await failure(create(ledger, "Iou:Iou", {**IOU, "amount": "lots"}))
    assert status == 400 and "amount" in error["errors"][0]
    # Alice cannot create a contract Bob must sign.
    status, error = await failure(create(ledger, "Iou:Iou", {**IOU, "issuer": "Bob"}))
    assert status == 400 and error["errors"][0].startswith("DAML_AUTHORIZATION_ERROR")
    status, error = await failure(ledger.stub.Create(
        pb.CreateRequest(rest=httpbody_pb2.HttpBody(data=b'{"templateId": f}')),
        metadata=rest(ALICE)))
    assert status == 400 and error["errors"][0].startswith("JSON parser error: ")
    # Ensure clause: the amount must be positive (LF 1.14+ throws PreconditionFailed).
    status, error = await failure(create(ledger, "Iou:Iou", {**IOU, "amount": "-1"}))
    assert status == 400 and "Template precondition violated" in error["errors"][0]


async def test_command_ids_deduplicate(ledger: Ledger, model_tests: bytes) -> None:
    await upload(ledger, model_tests)
    await create(ledger, "Iou:Iou", IOU, meta={"commandId": "cmd-1"})
    status, error = await failure(create(ledger, "Iou:Iou", IOU, meta={"commandId": "cmd-1"}))
    assert status == 409 and error["errors"][0].startswith("DUPLICATE_COMMAND")
    # Another submitter may use the same command id.
    await create(ledger, "Iou:Iou", {**IOU, "issuer": "Bob", "owner": "Bob"}, token=BOB,
                 meta={"commandId": "cmd-1"})


async def test_keyed_template_fetches_by_key_and_rejects_a_duplicate_key(
    ledger: Ledger, model_tests: bytes
) -> None:
    await upload(ledger, model_tests)
    payload = {"tkParty": "Alice", "tkKey": "some-key", "tkDisclosedTo": ["Bob"]}
    created = (await create(ledger, "Test:TextKey", payload))["result"]
    assert created["key"] == {"_1": "Alice", "_2": "some-key"}
    assert created["observers"] == ["Bob"]
    active = {k: v for k, v in created.items() if k != "completionOffset"}
    by_record = await fetch(ledger, {"templateId": "Test:TextKey",
                                     "key": {"_1": "Alice", "_2": "some-key"}})
    assert by_record == {"status": 200, "result": active}
    by_array = await fetch(ledger, {"templateId": "Test:TextKey", "key": ["Alice", "some-key"]})
    assert by_array == by_record
    # Bob is an observer, so he sees it too.
    assert (await fetch(ledger, {"templateId": "Test:TextKey",
                                 "key": ["Alice", "some-key"]}, token=BOB))["result"] == active
    assert await fetch(ledger, {"templateId": "Test:TextKey", "key": ["Alice", "other"]}) == {
        "status": 200, "result": None}
    status, error = await failure(create(ledger, "Test:TextKey", payload))
    assert status == 409
    assert error["errors"][0].startswith("DUPLICATE_CONTRACT_KEY")
    assert (await query(ledger, {"templateIds": ["Test:TextKey"]}))["result"] == [active]
    status, error = await failure(fetch(ledger, {"templateId": "Iou:Iou", "key": "x"}))
    assert status == 400 and "Template Key" in error["errors"][0]
    status, _ = await failure(fetch(ledger, {"templateId": "Test:TextKey"}))
    assert status == 400


async def test_concurrent_creates_under_one_key_commit_once(
    ledger: Ledger, model_tests: bytes
) -> None:
    await upload(ledger, model_tests)
    payload = {"tkParty": "Alice", "tkKey": "race", "tkDisclosedTo": []}
    outcomes = await asyncio.gather(*(create(ledger, "Test:TextKey", payload)
                                      for _ in range(20)), return_exceptions=True)
    assert sum(1 for o in outcomes if isinstance(o, dict)) == 1
    assert all(rest_error(o)[0] == 409 for o in outcomes if isinstance(o, grpc.aio.AioRpcError))


# ---------------------------------------------------------------------- codec round trips
def sample(packages: PackageSet, type_: Type, depth: int = 0) -> tuple[Any, Any]:
    """(JSON to send, JSON the ledger must answer) for a value of `type_`."""
    if isinstance(type_, TBuiltin):
        prim = type_.prim
        simple: dict[PrimType, tuple[Any, Any]] = {
            PrimType.BOOL: (True, True),
            PrimType.TEXT: ("h\u00e9llo \u2603", "h\u00e9llo \u2603"),
            PrimType.PARTY: ("Alice", "Alice"),
            PrimType.INT64: (-9007199254740993, "-9007199254740993"),
            PrimType.DATE: ("2020-02-29", "2020-02-29"),
            PrimType.TIMESTAMP: ("2020-01-01T12:34:56.789Z", "2020-01-01T12:34:56.789Z"),
            PrimType.UNIT: ({}, {}),
        }
        if prim in simple:
            return simple[prim]
        if prim is PrimType.NUMERIC:
            scale = type_.args[0]
            # Output has at least one fraction digit; extra input digits round to the scale.
            if isinstance(scale, TNat) and scale.value == 0:
                return "7", "7.0"
            return 7.25, "7.25"
        if prim is PrimType.LIST:
            sent, got = sample(packages, type_.args[0], depth + 1)
            return [sent, sent], [got, got]
        if prim is PrimType.OPTIONAL:
            return sample(packages, type_.args[0], depth + 1)
        if prim is PrimType.TEXTMAP:
            sent, got = sample(packages, type_.args[0], depth + 1)
            return {"b": sent, "a": sent}, {"a": got, "b": got}
        if prim is PrimType.GENMAP:
            key_sent, key_got = sample(packages, type_.args[0], depth + 1)
            value_sent, value_got = sample(packages, type_.args[1], depth + 1)
            return [[key_sent, value_sent]], [[key_got, value_got]]
    assert isinstance(type_, TCon), type_
    data_type = packages.data_type(type_.tycon)
    env = {p.name: a for p, a in zip(data_type.params, type_.args, strict=True)}
    from cairn.ledger.codec import substitute

    if data_type.kind == "record":
        pairs = {name: sample(packages, substitute(t, env), depth + 1)
                 for name, t in data_type.fields}
        return {n: s for n, (s, _) in pairs.items()}, {n: g for n, (_, g) in pairs.items()}
    if data_type.kind == "enum":
        return data_type.constructors[-1], data_type.constructors[-1]
    # Variants: the last constructor, unless we are deep (recursive types end on the first).
    index = 0 if depth > 3 else len(data_type.constructors) - 1
    sent, got = sample(packages, substitute(data_type.fields[index][1], env), depth + 1)
    tag = data_type.constructors[index]
    return {"tag": tag, "value": sent}, {"tag": tag, "value": got}


@pytest.mark.parametrize("version", TEST_DARS)
async def test_every_template_of_test_dars_round_trips(
    ledger: Ledger, shared_fixtures: Path, version: str
) -> None:
    data = (shared_fixtures / "daml" / f"test-{version}.dar").read_bytes()
    dar = load_dar(data)
    await upload(ledger, data)
    packages = PackageSet(dar.packages.values())
    templates = [t for m in dar.main_package.modules.values() for t in m.templates.values()]
    assert len(templates) >= 15
    for template in templates:
        template_id = f"{dar.main_package_id}:{template.name.module}:{template.name.name}"
        sent, expected = sample(packages, TCon(template.name))
        created = (await create(ledger, template_id, sent))["result"]
        assert created["payload"] == expected, template_id
        fetched = await fetch(ledger, {"contractId": created["contractId"]})
        assert fetched["result"]["payload"] == expected, template_id
        assert fetched["result"]["templateId"] == template_id


# ---------------------------------------------------------------------- parties
async def test_parties_are_allocated_listed_and_looked_up(
    ledger: Ledger, model_tests: bytes
) -> None:
    allocated = result(await ledger.stub.AllocateParty(
        pb.AllocatePartyRequest(rest=json_request({"identifierHint": "Carol",
                                                   "displayName": "Carol & Co. LLC"})),
        metadata=rest(ALICE)))
    assert allocated == {"status": 200, "result": {"identifier": "Carol",
                                                   "displayName": "Carol & Co. LLC",
                                                   "isLocal": True}}
    generated = result(await ledger.stub.AllocateParty(
        pb.AllocatePartyRequest(rest=json_request({})), metadata=rest(ALICE)))["result"]
    assert generated["identifier"] and "displayName" not in generated
    status, _ = await failure(ledger.stub.AllocateParty(
        pb.AllocatePartyRequest(rest=json_request({"identifierHint": "Carol-!"})),
        metadata=rest(ALICE)))
    assert status == 400
    # Creating a contract allocates its stakeholders implicitly, as the sandbox does.
    await upload(ledger, model_tests)
    await create(ledger, "Iou:Iou", IOU)
    listed = result(await ledger.stub.ListParties(pb.ListPartiesRequest(), metadata=rest(ALICE)))
    assert {"identifier": "Alice", "isLocal": True} in listed["result"]
    assert allocated["result"] in listed["result"]

    async def lookup(ids: Any) -> Any:
        return result(await ledger.stub.GetParties(
            pb.GetPartiesRequest(rest=json_request(ids)), metadata=rest(ALICE)))

    assert await lookup(["Alice", "Carol", "Erin"]) == {
        "status": 200,
        "result": [{"identifier": "Alice", "isLocal": True}, allocated["result"]],
        "warnings": {"unknownParties": ["Erin"]}}
    assert await lookup(["Erin"]) == {"status": 200, "result": [],
                                      "warnings": {"unknownParties": ["Erin"]}}
    status, error = await failure(lookup([]))
    assert status == 400 and "at least 1 element" in error["errors"][0]
    status, error = await failure(lookup([""]))
    assert status == 400 and error["errors"] == ["Daml-LF Party is empty"]


# ---------------------------------------------------------------------- tokens
async def test_tokens_are_required_and_checked(ledger: Ledger, model_tests: bytes) -> None:
    await upload(ledger, model_tests)
    status, error = await failure(ledger.stub.QueryAll(pb.QueryAllRequest(),
                                                       metadata=((REST_MARKER, "1"),)))
    assert (status, error) == (401, {"status": 401, "errors": [
        "missing Authorization header with OAuth 2.0 Bearer Token"]})
    no_ledger = encode_jwt_hs256({"https://daml.com/ledger-api": {
        "applicationId": "app", "actAs": ["Alice"]}}, "any secret")
    assert await failure(create(ledger, "Iou:Iou", IOU, token=no_ledger)) == (
        401, {"status": 401, "errors": ["ledgerId missing in access token"]})
    other_ledger = encode_jwt_hs256({"https://daml.com/ledger-api": {
        "ledgerId": "Other", "applicationId": "app", "actAs": ["Alice"]}}, "s")
    status, _ = await failure(create(ledger, "Iou:Iou", IOU, token=other_ledger))
    assert status == 401
    status, _ = await failure(create(ledger, "Iou:Iou", IOU, token="not.a.jwt"))
    assert status == 401
    # Envoy's signed claims header is trusted without a token; a forged one is not.
    claims = LedgerClaims("MyLedger", "app", ("Alice",))
    signed = ((CLAIMS_HEADER, sign_claims(claims, INTERNAL_SECRET)), (REST_MARKER, "1"))
    reply = await ledger.stub.QueryAll(pb.QueryAllRequest(), metadata=signed)
    assert result(reply)["status"] == 200
    forged = ((CLAIMS_HEADER, sign_claims(claims, "wrong secret")), (REST_MARKER, "1"))
    status, _ = await failure(ledger.stub.QueryAll(pb.QueryAllRequest(), metadata=forged))
    assert status == 401


async def test_verified_mode_checks_hs256_signatures(
    redis: aioredis.Redis, tmp_path: Path, model_tests: bytes
) -> None:
    policy = LedgerTokenPolicy(mode="hs256", hs256_secret="s3cret")
    verified = await start_ledger(redis, tmp_path / "blobs", policy)
    try:
        claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger",
                                                  "applicationId": "app", "actAs": ["Alice"]}}
        good = encode_jwt_hs256(claims, "s3cret")
        await upload(verified, model_tests, token=good)
        assert (await create(verified, "Iou:Iou", IOU, token=good))["status"] == 200
        # The documentation's sandbox tokens are signed with another secret.
        assert await failure(create(verified, "Iou:Iou", IOU, token=ALICE)) == (
            401, {"status": 401, "errors": ["Invalid access token: signature does not verify"]})
        expired = encode_jwt_hs256({**claims, "exp": 1000}, "s3cret")
        assert await failure(create(verified, "Iou:Iou", IOU, token=expired)) == (
            401, {"status": 401, "errors": ["Access token has expired"]})
    finally:
        await verified.stop()
