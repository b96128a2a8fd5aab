"""Channels to other Cairn services: every call carries the caller's request id and trace.

A service that calls another on behalf of a request passes on Envoy's `x-request-id` (bound in the
logging context by the server interceptor), so both services' log lines for that request carry
the same `request_id`, and the W3C `traceparent` of the current span, so the callee's span joins
the trace (`cairn.runtime.tracing`). With tracing on, each unary call also gets a client span.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog
from opentelemetry import propagate, trace

from cairn.runtime.tracing import tracer

REQUEST_ID = "x-request-id"


def _propagated(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    extra: dict[str, str] = {}
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        extra[REQUEST_ID] = str(request_id)
    propagate.inject(extra)  # adds traceparent only while a recording span is current
    if not extra:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in extra.items():
        if key not in metadata:
            metadata.add(key, value)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                      details.credentials, details.wait_for_ready)


class _Propagate(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc,type-arg]
    """Cairn's internal calls are unary: request id and trace context on each, a client span
    around each while tracing."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]],
        details: grpc.aio.ClientCallDetails, request: Any,
    ) -> Any:
        active = tracer()
        if active is None:
            return await continuation(_propagated(details), request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        service, _, name = method.lstrip("/").rpartition("/")
        with active.start_as_current_span(
            method.lstrip("/"), kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        ) as span:
            call = await continuation(_propagated(details), request)
            code = await call.code()
            span.set_attribute("rpc.grpc.status_code", int(code.value[0]))
            if code != grpc.StatusCode.OK:
                span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            return call


_INTERCEPTORS = [_Propagate()]


def internal_channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to another Cairn service that passes on request id and trace."""
    return grpc.aio.insecure_channel(address, interceptors=_INTERCEPTORS)  # type: ignore[arg-type]
