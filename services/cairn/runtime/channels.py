"""Channels to other Cairn services: every call carries the caller's request id and trace, and
rides through a peer's restart.

A service that calls another on behalf of a request passes on Envoy's `x-request-id` (bound in the
logging context by the server interceptor), so both services' log lines for that request carry
the same `request_id`, and the W3C `traceparent` of the current span, so the callee's span joins
the trace (`cairn.runtime.tracing`). With tracing on, each unary call also gets a client span.

Faults (docs/faults.md): a peer that restarts is reconnected within a quarter second (gRPC's
default reconnect backoff grows to two minutes), and the service config's retry policy retries an
idempotent call the peer answered UNAVAILABLE, with backoff. A call that may have changed state
(RecordComponentUsage) is not retried: only gRPC's transparent retry of a call that never left
this process applies to it, and it waits up to a second for a reconnecting channel (`reconnected`)
instead of failing on one while the peer is already back. What still fails reaches our client
as 503 / UNAVAILABLE (`unavailable_peer`).

In Kubernetes a service's address is its headless Service (`<release>-cairn-auth:20053`), whose
DNS name resolves to every ready pod. A plain channel would connect to one of them and keep that
HTTP/2 connection, pinning all of a caller's calls to one pod. These channels resolve the name
with gRPC's DNS resolver and spread calls over every address (`round_robin`). The resolver looks
the name up again when a connection fails or closes (a pod leaves), at most every 30 s (gRPC's
default); a pod added by a scale-up gets calls once the name is resolved again. Locally
(`127.0.0.1:port`) there is one address and nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog
from opentelemetry import propagate, trace

from cairn.runtime.errors import PEER_UNAVAILABLE_CODES, Unavailable, peer_unavailable
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

# Calls that are safe to repeat: reads, and get-or-create of the default project.
IDEMPOTENT_METHODS = {
    "cairn.auth.v1.AuthService": ("Authenticate", "LookupAccount"),
    "cairn.project.v1.ProjectService": ("GetDefaultProject", "AuthorizeProjectAction"),
    "cairn.project.v1.PluginService": ("AuthorizeComponentPluginInstallation",),
    "grpc.health.v1.Health": ("Check",),
}

SERVICE_CONFIG = json.dumps({
    # Balance over every address the name resolves to (each pod behind a headless Service).
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [
            {"service": service, "method": method}
            for service, methods in IDEMPOTENT_METHODS.items()
            for method in methods
        ],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.1s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
})

CHANNEL_OPTIONS = (
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    # A restarted peer is found again within a quarter second (the retries above span about as
    # long on average): reconnecting to a local port that refuses costs next to nothing.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 250),
)


def internal_channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to another Cairn service (one per peer and process) that passes on
    request id and trace and retries idempotent calls through the peer's restart."""
    explicit = "://" in address or address.startswith(("dns:", "ipv4:", "ipv6:", "unix:"))
    target = address if explicit else f"dns:///{address}"
    return grpc.aio.insecure_channel(
        target, options=CHANNEL_OPTIONS, interceptors=_INTERCEPTORS  # type: ignore[arg-type]
    )


# How long a call that must not be repeated waits for a channel that is reconnecting (a peer
# that just restarted is found again within the 250 ms reconnect backoff above).
RECONNECT_GRACE_SECONDS = 1.0


async def reconnected(channel: grpc.aio.Channel, grace: float = RECONNECT_GRACE_SECONDS) -> None:
    """Wait up to `grace` for `channel` to be connected, before a call the retry policy must not
    repeat: such a call fails at once on a channel still reconnecting to a restarted peer,
    although it was never sent. Past the grace the call goes ahead and fails as UNAVAILABLE."""
    if channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await channel.channel_ready()


def unavailable_peer(err: grpc.aio.AioRpcError, service: str) -> Unavailable | None:
    """The 503 a failed call to `service` means when the peer was unreachable or too slow."""
    return peer_unavailable(service) if err.code() in PEER_UNAVAILABLE_CODES else None
