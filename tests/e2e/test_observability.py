"""Observability through `make run`'s stack: scrape URLs, Envoy's stats, access log, error details.

A mixed workload (REST and native gRPC, through Envoy and direct, successes and each kind of
failure) runs against the shared stack; every count below is what that workload must add, read
from before/after scrapes, so the other e2e tests in the session do not disturb it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from cairn.auth.ledger_jwt import encode_jwt_hs256
from cairn.ledger.v1 import ledger_service_pb2 as ledger_pb
from cairn.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc
from cairn.project.v1 import project_service_pb2 as pb
from cairn.project.v1 import project_service_pb2_grpc as pb_grpc
from cairn.stack.launcher import REPO_ROOT

from .conftest import RunningStack

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
MISSING = "00000000-0000-0000-0000-0000000000fe"


def scrape(url: str) -> Samples:
    """Every sample of a scrape; the parser rejects text that is not Prometheus' format."""
    reply = httpx.get(url, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def delta(before: Samples, after: Samples) -> Callable[..., float]:
    def of(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    return of


def handled(service: str, method: str, code: str) -> dict[str, str]:
    return {"grpc_type": "unary", "grpc_service": service, "grpc_method": method,
            "grpc_code": code}


def access_entries(text: str) -> Iterator[dict[str, Any]]:
    """Envoy's access-log objects in the shared stack log. Every part of the stack writes to the
    one file, and Envoy's flushes need not end at a line's end, so another process's line can
    follow an access-log object on the same line: each object is decoded from where it starts."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r'"event":\s*"http_access"', text):
        start = text.rfind("{", 0, match.start())  # the object is flat: its own brace
        try:
            entry, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue  # still being written
        yield entry


def access_log(stack: RunningStack, request_ids: set[str]) -> dict[str, dict[str, object]]:
    """Envoy's access-log lines for these request ids (Envoy flushes its log every second)."""
    found: dict[str, dict[str, object]] = {}
    for _ in range(100):
        for entry in access_entries((stack.run_dir / "stack.log").read_text(errors="replace")):
            if entry["request_id"] in request_ids:
                found[str(entry["request_id"])] = entry
        if set(found) == request_ids:
            break
        time.sleep(0.1)
    return found


def ledger_token(party: str) -> str:
    claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger", "applicationId": "metrics",
                                              "actAs": [party]}}
    return encode_jwt_hs256(claims, "sandbox")


def test_scrapes_count_exactly_the_calls_of_a_mixed_workload(
    stack: RunningStack, shared_fixtures: Path
) -> None:
    assert set(stack.metrics_urls) == {"auth", "project", "component", "ledger", "envoy"}
    alice = {"Authorization": f"Bearer {ledger_token('Alice')}"}
    iou = json.dumps({"templateId": "Iou:Iou", "payload": {
        "issuer": "Alice", "owner": "Alice", "currency": "USD", "amount": "7", "observers": []}})
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
        assert client.post("/v1/packages", content=dar, headers={
            **alice, "Content-Type": "application/octet-stream"}).status_code == 200
    before = {part: scrape(url) for part, url in stack.metrics_urls.items()}
    auth = {"Authorization": f"Bearer {stack.root_token}"}
    request_ids: dict[str, int] = {}  # request id -> HTTP status the client saw
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        for _ in range(2):
            reply = client.post("/v1/create", content=iou, headers=alice)
            assert reply.status_code == 200, reply.text
            request_ids[reply.headers["x-request-id"]] = 200
        for path, headers, count in [
            ("/v1/projects", auth, 3),
            (f"/v1/projects/{MISSING}", auth, 2),
            ("/v1/projects", {}, 2),  # denied by ext_authz: never reaches the project service
        ]:
            for _ in range(count):
                reply = client.get(path, headers=headers)
                request_ids[reply.headers["x-request-id"]] = reply.status_code
    metadata = (("authorization", f"Bearer {stack.root_token}"),)
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_ports['project']}") as channel:
        # Direct: the project service authenticates the token with the auth service itself.
        pb_grpc.ProjectServiceStub(channel).GetDefaultProject(
            pb.GetDefaultProjectRequest(), metadata=metadata)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as missing:
            pb_grpc.ProjectServiceStub(channel).GetProject(
                pb.GetProjectRequest(project_id=MISSING), metadata=metadata)
        failed: grpc.Call = missing.value  # type: ignore[assignment]
        # A trailers-only reply: Envoy's headers arrive with the trailers.
        answer = dict([*failed.initial_metadata(), *failed.trailing_metadata()])
        request_ids[str(answer["x-request-id"])] = 200
    after = {part: scrape(url) for part, url in stack.metrics_urls.items()}

    project = delta(before["project"], after["project"])
    service = "cairn.project.v1.ProjectService"
    assert project("grpc_server_handled_total", **handled(service, "ListProjects", "OK")) == 3
    assert project("grpc_server_handled_total", **handled(service, "GetProject", "NOT_FOUND")) == 3
    assert project("grpc_server_handled_total",
                   **handled(service, "GetDefaultProject", "OK")) == 1
    for method, calls in [("ListProjects", 3), ("GetProject", 3), ("GetDefaultProject", 1)]:
        labels = {"grpc_type": "unary", "grpc_service": service, "grpc_method": method}
        assert project("grpc_server_started_total", **labels) == calls
        assert project("grpc_server_handling_seconds_count", **labels) == calls
        assert after["project"][("grpc_server_in_flight", frozenset(labels.items()))] == 0

    auth_delta = delta(before["auth"], after["auth"])
    # ext_authz: every call through Envoy, allowed or denied (2 ledger + 3 + 2 + 2 REST, 1 gRPC).
    assert auth_delta("grpc_server_handled_total", **handled(
        "envoy.service.auth.v3.Authorization", "Check", "OK")) == 10
    assert auth_delta("grpc_server_handled_total", **handled(
        "cairn.auth.v1.AuthService", "Authenticate", "OK")) == 1
    assert auth_delta("cairn_auth_denials_total", reason="UNAUTHENTICATED") == 2

    ledger = delta(before["ledger"], after["ledger"])
    assert ledger("grpc_server_handled_total",
                  **handled("cairn.ledger.v1.LedgerService", "Create", "OK")) == 2
    assert ledger("cairn_ledger_commits_total") == 2
    assert ledger("cairn_ledger_end_offset") == 2
    assert ledger("cairn_redis_command_seconds_count", command="EVALSHA") >= 2
    # Blob store calls are timed too: the package upload above checked for the DAR (a delta
    # would race the once-a-second readiness probe when the workload takes under a second).
    blob_exists = ("cairn_blobstore_operation_seconds_count",
                   frozenset({"operation": "exists", "backend": "disk"}.items()))
    assert after["ledger"].get(blob_exists, 0.0) >= 1

    envoy = delta(before["envoy"], after["envoy"])
    assert envoy("envoy_cluster_upstream_rq_total", envoy_cluster_name="project") == 6
    assert envoy("envoy_cluster_upstream_rq_total", envoy_cluster_name="ledger") == 2
    assert envoy("envoy_cluster_upstream_rq_total", envoy_cluster_name="auth") == 10
    assert envoy("envoy_http_downstream_rq_total", envoy_http_conn_manager_prefix="cairn") == 10

    logged = access_log(stack, set(request_ids))
    assert set(logged) == set(request_ids), "one access-log line per request"
    for request_id, status in request_ids.items():
        entry = logged[request_id]
        assert entry["status"] == status
        assert entry["method"] in ("GET", "POST")  # the client's, not the transcoder's POST
        assert isinstance(entry["duration_ms"], int) and isinstance(entry["bytes_sent"], int)
    rest_missing = next(logged[r] for r, s in request_ids.items() if s == 404)
    assert rest_missing["method"] == "GET"
    assert rest_missing["path"] == f"/v1/projects/{MISSING}"
    assert rest_missing["route"] == "/cairn.project.v1.ProjectService/GetProject"
    assert rest_missing["upstream_cluster"] == "project"
    denied = next(logged[r] for r, s in request_ids.items() if s == 401)
    assert denied["response_flags"] == "UAEX"  # unauthorized by the external authorization


def test_native_grpc_errors_through_envoy_carry_error_info(stack: RunningStack) -> None:
    metadata = (("authorization", f"Bearer {stack.root_token}"),)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.ProjectServiceStub(channel)
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetProject(pb.GetProjectRequest(project_id=MISSING), metadata=metadata)
        with pytest.raises(grpc.RpcError) as invalid:
            stub.GetProject(pb.GetProjectRequest(project_id="not-a-uuid"), metadata=metadata)
    for failed, code, reason in [(missing, grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
                                 (invalid, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")]:
        status = rpc_status.from_call(failed.value)  # type: ignore[arg-type]
        assert status is not None and failed.value.code() == code  # type: ignore[attr-defined]
        info, request = error_details_pb2.ErrorInfo(), error_details_pb2.RequestInfo()
        assert status.details[0].Unpack(info) and status.details[-1].Unpack(request)
        assert (info.reason, info.domain) == (reason, "cairn.project")
        assert uuid.UUID(request.request_id), "Envoy's request id"


def test_rest_error_bodies_do_not_carry_the_grpc_details(stack: RunningStack) -> None:
    reply = httpx.get(f"{stack.base_url}/v1/projects/{MISSING}",
                      headers={"Authorization": f"Bearer {stack.root_token}"})
    assert reply.status_code == 404
    assert reply.content == f'{{"error":"Project not found: {MISSING}"}}'.encode()
    assert "grpc-status-details-bin" not in reply.headers


def _bad_request(failed: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the BadRequest field paths of a failed native call."""
    status = rpc_status.from_call(failed.value)  # type: ignore[arg-type]
    assert status is not None
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info)
    (packed,) = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    assert packed.Unpack(bad)
    # Each violation's description is one of the REST body's errors, in the same order.
    assert [v.description for v in bad.field_violations] == status.message.split("; ")
    return info.reason, [v.field for v in bad.field_violations]


def test_validation_errors_name_the_fields_for_native_clients_rest_bodies_unchanged(
    stack: RunningStack,
) -> None:
    root = (("authorization", f"Bearer {stack.root_token}"),)
    alice = (("authorization", f"Bearer {ledger_token('Alice')}"),)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        projects = pb_grpc.ProjectServiceStub(channel)
        with pytest.raises(grpc.RpcError) as empty_project:
            projects.CreateProject(pb.CreateProjectRequest(), metadata=root)
        with pytest.raises(grpc.RpcError) as bad_id:
            projects.GetProject(pb.GetProjectRequest(project_id="not-a-uuid"), metadata=root)
        ledger = ledger_grpc.LedgerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as bad_hint:
            ledger.AllocateParty(ledger_pb.AllocatePartyRequest(identifier_hint="bad hint!"),
                                 metadata=alice)
        with pytest.raises(grpc.RpcError) as unknown_template:
            ledger.Create(ledger_pb.CreateRequest(template_id="No:Such"), metadata=alice)
    assert _bad_request(empty_project) == (
        "INVALID_REQUEST", ["name", "ownerAccountId", "description"])
    assert _bad_request(bad_id) == ("INVALID_REQUEST", ["projectId"])
    assert _bad_request(bad_hint) == ("INVALID_REQUEST", ["identifierHint"])
    assert _bad_request(unknown_template) == ("INVALID_REQUEST", ["templateId"])

    # The same failures over REST: exactly the documented bodies, no details.
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        created = client.post("/v1/projects", json={},
                              headers={"Authorization": f"Bearer {stack.root_token}"})
        allocated = client.post("/v1/parties/allocate", json={"identifierHint": "bad hint!"},
                                headers={"Authorization": f"Bearer {ledger_token('Alice')}"})
    assert (created.status_code, created.content) == (400, (
        b'{"errors":["Missing field: name","Missing field: ownerAccountId",'
        b'"Missing field: description"]}'))
    assert (allocated.status_code, allocated.json()) == (400, {"status": 400, "errors": [
        "Invalid party identifier hint 'bad hint!': use 1 to 255 letters, digits and the "
        "characters : - _ and space"]})


def test_the_example_alerts_name_metrics_the_stack_serves(stack: RunningStack) -> None:
    """docs/observability.md's PrometheusRule: valid YAML, and no alert watches a metric that
    nothing serves (a typo there would never fire)."""
    doc = (REPO_ROOT / "docs" / "observability.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "PrometheusRule" in b]
    rule = yaml.safe_load(block)
    assert rule["kind"] == "PrometheusRule"
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(exprs) >= 4
    served: set[str] = set()
    for url in stack.metrics_urls.values():
        for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
            served |= {family.name, f"{family.name}_total", f"{family.name}_bucket",
                       *(s.name for s in family.samples)}
    named = {m for e in exprs for m in re.findall(r"\b([a-z_][a-z0-9_]*)\s*[{\[]", e)}
    named -= {"up"}  # Prometheus's own, per target
    assert named and named <= served, sorted(named - served)
