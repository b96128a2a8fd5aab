"""Traces: one OpenTelemetry span per RPC, W3C trace context in and out, OTLP export.

Tracing is on only when `CAIRN_OTLP_ENDPOINT` names an OTLP/gRPC collector (`host:port`); then the
SDK exports every sampled span in batches, and `CAIRN_TRACE_SAMPLE_RATIO` samples new traces (a
trace that arrives sampled or not, e.g. from Envoy, keeps its parent's decision). Off, nothing of
the SDK is loaded or configured, the interceptor starts no span, and internal calls carry only
their request id: tracing then costs one `is None` test per call.

Spans follow OpenTelemetry's RPC conventions (`rpc.system`, `rpc.service`, `rpc.method`,
`rpc.grpc.status_code`); the server span of a call is the parent of the client spans of the calls
it makes to other Cairn services (`cairn.runtime.channels`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

INSTRUMENTATION = "cairn.runtime"
_tracer: trace.Tracer | None = None  # set once by configure_tracing


def configure_tracing(service: str, endpoint: str, sample_ratio: float) -> Callable[[], None]:
    """Install the SDK's tracer provider exporting to `endpoint`; returns its shutdown (flush)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"cairn-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint,
                                                                    insecure=True)))
    trace.set_tracer_provider(provider)
    global _tracer
    _tracer = provider.get_tracer(INSTRUMENTATION)
    return provider.shutdown


def tracer() -> trace.Tracer | None:
    """The tracer spans are made with, or None when tracing is off."""
    return _tracer


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class ServerSpan:
    """The span of one served call, current while its handler runs."""

    def __init__(self, tracer: trace.Tracer, method: str, metadata: Mapping[str, str]) -> None:
        parent = propagate.extract(metadata)
        self._span = tracer.start_span(method.lstrip("/"), context=parent,
                                       kind=trace.SpanKind.SERVER,
                                       attributes=_rpc_attributes(method))
        self._token = otel_context.attach(trace.set_span_in_context(self._span, parent))

    def end(self, code: str) -> None:
        """End with the call's status (a gRPC code name)."""
        self._span.set_attribute("rpc.grpc.status_code", _code_number(code))
        if code != "OK":
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, code))
        self._span.end()
        otel_context.detach(self._token)


def _code_number(name: str) -> int:
    from grpc import StatusCode

    member = StatusCode.__members__.get(name, StatusCode.UNKNOWN)
    return int(member.value[0])
