"""Prometheus metrics: the standard gRPC server metrics and each process's scrape endpoint.

Every service serves `prometheus_client`'s default registry (its own metrics plus the client's
process and Python collectors) on a port of its own, `CAIRN_<SERVICE>_METRICS_PORT`, at any path
(`/metrics` by convention). The gRPC server metrics are the ones go-grpc-prometheus made standard,
so existing dashboards and alerts work unchanged; they are recorded in the one server interceptor
(`cairn.runtime.server`). Domain metrics live beside the code they describe (for example
`cairn.ledger.metrics`) and register in the same default registry. docs/observability.md lists
them all with example alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

# Seconds; finer than the client's defaults at the low end, where most Cairn calls finish.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = Counter("grpc_server_started", "RPCs started on the server.", _LABELS)
HANDLED = Counter("grpc_server_handled", "RPCs completed on the server, by status code.",
                  (*_LABELS, "grpc_code"))
HANDLING_SECONDS = Histogram("grpc_server_handling_seconds",
                             "Time from the start of an RPC to its status, on the server.",
                             _LABELS, buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("grpc_server_in_flight", "RPCs started and not yet completed.", _LABELS)

# Whether this process times its calls (CAIRN_METRICS_ENABLED). The entry point sets it before it
# builds anything; off, no scrape port is opened and the per-call timings (gRPC server metrics,
# Redis commands, blob store calls) are not taken, so `false` measures what metrics cost.
_recording = True


def set_recording(on: bool) -> None:
    global _recording
    _recording = on


def recording() -> bool:
    return _recording


def rpc_type(handler: grpc.RpcMethodHandler[object, object]) -> str:
    """go-grpc-prometheus's grpc_type label for a method handler."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


@dataclass
class MethodMetrics:
    """The labelled children of one method, looked up once (label lookups take a lock)."""

    started: Counter
    seconds: Histogram
    in_flight: Gauge
    _handled: dict[str, Counter] = field(default_factory=dict)
    _labels: tuple[str, str, str] = ("", "", "")

    def handled(self, code: str) -> Counter:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = HANDLED.labels(*self._labels, code)
        return child


class RpcMetrics:
    """Per-method metric children, keyed by the full method path (`/pkg.Service/Method`)."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodMetrics] = {}

    def method(self, path: str, kind: str) -> MethodMetrics:
        found = self._methods.get(path)
        if found is None:
            service, _, name = path.lstrip("/").rpartition("/")
            labels = (kind, service, name)
            found = self._methods[path] = MethodMetrics(
                STARTED.labels(*labels), HANDLING_SECONDS.labels(*labels),
                IN_FLIGHT.labels(*labels), _labels=labels,
            )
        return found


def serve_metrics(host: str, port: int) -> WSGIServer:
    """Serve the default registry over HTTP on a daemon thread; `shutdown()` stops it."""
    server, _thread = prometheus_client.start_http_server(port, addr=host)
    return server
