"""Traces: one REST create is one trace across Envoy, ext_authz (the auth service) and the ledger.

The stack runs with CAIRN_OTLP_ENDPOINT pointing at an OTLP/gRPC collector in this test process
(the real `opentelemetry.proto` TraceService), so the spans checked are exactly what Envoy's
OpenTelemetry tracer and the services' SDK export.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from cairn.auth.ledger_jwt import encode_jwt_hs256
from cairn.stack.launcher import Stack, free_port

pytestmark = pytest.mark.e2e


@dataclass
class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Keeps every exported span with the `service.name` of its resource."""

    spans: list[tuple[str, trace_pb2.Span]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: bytes) -> list[tuple[str, trace_pb2.Span]]:
        with self.lock:
            return [(s, span) for s, span in self.spans if span.trace_id == trace_id]


def attribute(span: trace_pb2.Span, key: str) -> str:
    return next((a.value.string_value for a in span.attributes if a.key == key), "")


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    sink = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield sink, port
    server.stop(0)


@pytest.fixture(scope="module")
def traced_stack(collector: tuple[Collector, int],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir: Path = tmp_path_factory.mktemp("traced-stack")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")},
        "CAIRN_HTTP_PORT": str(free_port()),
        "CAIRN_ENVOY_ADMIN_PORT": str(free_port()),
        **{f"CAIRN_{n.upper()}_GRPC_PORT": str(free_port())
           for n in ("project", "component", "auth", "ledger")},
        "CAIRN_OTLP_ENDPOINT": f"127.0.0.1:{collector[1]}",
        "CAIRN_LOG_LEVEL": "warning",
        # The SDK's batch processor exports every 200 ms instead of every 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    stack = Stack.prepare(env, run_dir, log_dir=run_dir / "logs").start()
    try:
        yield stack
    finally:
        stack.stop()


def test_a_rest_create_is_one_trace_through_envoy_ext_authz_and_the_ledger(
    traced_stack: Stack, collector: tuple[Collector, int], shared_fixtures: Path
) -> None:
    sink, _ = collector
    claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger", "applicationId": "trace",
                                              "actAs": ["Alice"]}}
    headers = {"Authorization": f"Bearer {encode_jwt_hs256(claims, 'sandbox')}"}
    dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
    with httpx.Client(base_url=traced_stack.rest_url, timeout=60) as client:
        uploaded = client.post("/v1/packages", content=dar,
                               headers={**headers, "Content-Type": "application/octet-stream"})
        assert uploaded.status_code == 200, uploaded.text
        created = client.post("/v1/create", headers=headers, content=json.dumps({
            "templateId": "Iou:Iou", "payload": {"issuer": "Alice", "owner": "Alice",
                                                 "currency": "USD", "amount": "1.5",
                                                 "observers": []}}))
    assert created.status_code == 200, created.text
    request_id = created.headers["x-request-id"]

    def the_trace() -> list[tuple[str, trace_pb2.Span]]:
        with sink.lock:
            ingress = [span for _, span in sink.spans
                       if attribute(span, "guid:x-request-id") == request_id
                       and span.kind == trace_pb2.Span.SPAN_KIND_SERVER]
        return sink.of_trace(ingress[0].trace_id) if ingress else []

    wanted = {"cairn-envoy", "cairn-auth", "cairn-ledger"}
    spans = the_trace()
    deadline = time.monotonic() + 60  # Envoy flushes its spans every 5 s
    while ({s for s, _ in spans} < wanted or len(spans) < 4) and time.monotonic() < deadline:
        time.sleep(0.5)
        spans = the_trace()
    by_service: dict[str, list[trace_pb2.Span]] = {}
    for service, span in spans:
        by_service.setdefault(service, []).append(span)
    assert wanted <= set(by_service), {s: [x.name for x in v] for s, v in by_service.items()}
    envoy_ids = {span.span_id for span in by_service["cairn-envoy"]}
    (authz,) = [s for s in by_service["cairn-auth"]
                if s.name == "envoy.service.auth.v3.Authorization/Check"]
    (create,) = [s for s in by_service["cairn-ledger"]
                 if s.name == "cairn.ledger.v1.LedgerService/Create"]
    # Both services' spans hang off Envoy's: the ext_authz call and the routed request.
    assert authz.parent_span_id in envoy_ids and create.parent_span_id in envoy_ids
    assert create.kind == authz.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert attribute(create, "rpc.system") == "grpc"
    assert create.status.code != trace_pb2.Status.STATUS_CODE_ERROR
