"""Envoy's external authorization: each request is checked by the authorizer for its path.

Golem paths (the default) take a Golem bearer token or session cookie; other API families (the
DAML ledger's JWTs) register their own `RequestAuthorizer` for their paths in `cairn.auth.__main__`.
The login bootstrap routes are public (`PublicAuthorizer`), and internal service-to-service methods
are never reachable through Envoy (`InternalOnlyAuthorizer`). An allowed request carries the signed
`x-cairn-principal` header to the services; client-sent identity headers never pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from cairn.auth import metrics
from cairn.auth.service import MISSING_TOKEN, Authenticator
from cairn.runtime import principal as principals
from cairn.runtime.callers import bearer_secret
from cairn.runtime.errors import ServiceError

Context = grpc.aio.ServicerContext[Any, Any]
SESSION_COOKIE = "GOLEM_SESSION"


@dataclass(frozen=True)
class HttpRequest:
    """What an authorizer may look at: method, path (before transcoding), lower-case headers."""

    method: str
    path: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Allow:
    principal: principals.Principal | None = None
    # Extra headers for the upstream (e.g. claims a service needs), and headers to drop.
    headers: Mapping[str, str] = field(default_factory=dict)
    remove: Sequence[str] = ("authorization",)


@dataclass(frozen=True)
class Deny:
    http_status: int
    message: str
    # Stable, for the denials metric: the refusing ServiceError's reason, or the authorizer's own.
    # Not part of the decision: two denials with the same answer are equal.
    reason: str = field(default="UNAUTHENTICATED", compare=False)


class RequestAuthorizer(Protocol):
    async def check(self, request: HttpRequest) -> Allow | Deny: ...


PathMatcher = Callable[[str], bool]


def presented_secret(headers: Mapping[str, str]) -> str:
    """The token secret from `Authorization: Bearer` or Golem's `GOLEM_SESSION` cookie."""
    secret = bearer_secret(headers.get("authorization", ""))
    if secret:
        return secret
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            return value.strip()
    return ""


class GolemTokenAuthorizer:
    """Golem's security schemes: bearer token or session cookie, both a token secret."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authn = authenticator

    async def check(self, request: HttpRequest) -> Allow | Deny:
        try:
            principal = await self._authn.authenticate(presented_secret(request.headers))
        except ServiceError as err:
            return Deny(err.http_status, err.message, err.reason)
        return Allow(principal)


def path_only(path: str) -> str:
    """The request path without its query string (ext_authz sees both)."""
    return path.split("?", 1)[0]


def exact_paths(*paths: str) -> PathMatcher:
    """A matcher for exact paths (query strings ignored)."""
    wanted = frozenset(paths)
    return lambda path: path_only(path) in wanted


# Golem's login bootstrap routes: how a caller without a token gets one. REST paths and the
# native gRPC methods they transcode to.
LOGIN_BOOTSTRAP_PATHS = (
    "/v1/oauth2",
    "/login/oauth2/device/start",
    "/login/oauth2/device/complete",
    # The 2023 docs' device-flow paths.
    "/oauth2/device/start",
    "/oauth2/device/complete",
    "/v1/login/oauth2/web/authorize",
    "/v1/login/oauth2/web/callback/github",
    "/v1/login/oauth2/web/poll",
    *(
        f"/cairn.auth.v1.LoginService/{method}"
        for method in (
            "OAuth2", "StartDeviceLogin", "CompleteDeviceLogin",
            "AuthorizeWebLogin", "WebLoginCallback", "PollWebLogin",
        )
    ),
)
# Golem's health and version routes, open to everyone (served by the project service).
HEALTH_CHECK_PATHS = (
    "/healthcheck",
    "/version",
    "/cairn.project.v1.HealthCheckService/Healthcheck",
    "/cairn.project.v1.HealthCheckService/Version",
)
# Methods only Cairn services call, directly on the service's own port.
INTERNAL_PATHS = (
    "/cairn.auth.v1.AuthService/LookupAccount",
    "/cairn.auth.v1.AuthService/RecordComponentUsage",
)
INTERNAL_ONLY = "Internal method: not available through the gateway"
IDENTITY_HEADERS = ("authorization", "cookie", principals.PRINCIPAL_HEADER)
# Distinct principals whose allowing answer a process keeps (cleared when full), and for how long.
ALLOWED_CACHE_MAX = 10_000
ALLOWED_REUSE_SECONDS = 1.0


class PublicAuthorizer:
    """Lets anyone through without a principal, dropping whatever identity the client sent."""

    async def check(self, request: HttpRequest) -> Allow | Deny:
        return Allow(None, remove=IDENTITY_HEADERS)


class InternalOnlyAuthorizer:
    """Refuses methods meant only for Cairn services, whatever credentials come with them."""

    async def check(self, request: HttpRequest) -> Allow | Deny:
        return Deny(403, INTERNAL_ONLY, "INTERNAL_ONLY")


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


class ExtAuthzApi(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Envoy asks before every protected request; the first matching authorizer decides."""

    def __init__(
        self,
        default: RequestAuthorizer,
        internal_secret: str,
        routes: Sequence[tuple[PathMatcher, RequestAuthorizer]] = (),
    ) -> None:
        self._default = default
        self._routes = list(routes)
        self._secret = internal_secret
        # (principal, headers removed) -> the answer allowing it, and when to sign it afresh.
        # Authentication still runs on every check; only the signed header and the response
        # message are reused (signing and building them cost ~12 µs of a ~40 µs check).
        self._allowed: dict[tuple[principals.Principal | None, Sequence[str]],
                            tuple[external_auth_pb2.CheckResponse, float]] = {}

    def authorizer_for(self, path: str) -> RequestAuthorizer:
        return next((a for matches, a in self._routes if matches(path)), self._default)

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: Context
    ) -> external_auth_pb2.CheckResponse:
        http = request.attributes.request.http
        # Envoy's own call carries no request id; the request it asks about does.
        request_id = http.headers.get("x-request-id") or http.id
        if request_id:
            structlog.contextvars.bind_contextvars(request_id=request_id)
        # The request's header map is already a read-only view with `get`: no copy.
        incoming = HttpRequest(http.method, http.path, http.headers)
        decision = await self.authorizer_for(http.path).check(incoming)
        if isinstance(decision, Deny):
            return self._deny(decision)
        if decision.headers:  # per-request headers (e.g. a ledger token's signed claims)
            return self._allow(decision)
        key = (decision.principal, tuple(decision.remove))
        now = time.time()
        cached = self._allowed.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        response = self._allow(decision, now)
        if len(self._allowed) >= ALLOWED_CACHE_MAX:
            self._allowed.clear()
        # Re-signed after a second, so a service gets a header with practically the lifetime it
        # had when each check signed its own (a slow upload body may need all of it).
        self._allowed[key] = (response, now + ALLOWED_REUSE_SECONDS)
        return response

    def _allow(self, decision: Allow, now: float | None = None) -> external_auth_pb2.CheckResponse:
        headers = [_header(k, v) for k, v in decision.headers.items()]
        if decision.principal is not None:
            assertion = principals.sign(decision.principal, self._secret, now)
            headers.append(_header(principals.PRINCIPAL_HEADER, assertion))
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=headers, headers_to_remove=list(decision.remove)
            ),
        )

    @staticmethod
    def _deny(decision: Deny) -> external_auth_pb2.CheckResponse:
        metrics.DENIALS.labels(decision.reason).inc()
        message = decision.message or MISSING_TOKEN
        # Plain text: Envoy's local_reply_config wraps it in the API family's JSON error shape.
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message=message),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=decision.http_status), body=message
            ),
        )
