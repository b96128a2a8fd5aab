"""gRPC surface of the auth service: AuthService, and Authorization for Envoy's ext_authz."""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from cairn.auth.service import MISSING_TOKEN, Authenticator
from cairn.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cairn.runtime import principal as principals
from cairn.runtime.callers import bearer_secret
from cairn.runtime.errors import ServiceError

log = structlog.get_logger()
Context = grpc.aio.ServicerContext[Any, Any]
SESSION_COOKIE = "GOLEM_SESSION"


def presented_secret(headers: dict[str, str]) -> str:
    """The token secret from `Authorization: Bearer` or Golem's `GOLEM_SESSION` cookie."""
    secret = bearer_secret(headers.get("authorization", ""))
    if secret:
        return secret
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            return value.strip()
    return ""


class AuthApi(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, authenticator: Authenticator) -> None:
        self._authn = authenticator

    async def Authenticate(
        self, request: auth_service_pb2.AuthenticateRequest, context: Context
    ) -> auth_service_pb2.AuthenticateResponse:
        p = await self._authn.authenticate(request.token_secret)
        return auth_service_pb2.AuthenticateResponse(
            principal=auth_service_pb2.Principal(
                account_id=p.account_id, token_id=p.token_id, roles=list(p.roles)
            )
        )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


class ExtAuthzApi(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Envoy asks before every protected request; a yes carries the signed principal header."""

    def __init__(self, authenticator: Authenticator, internal_secret: str) -> None:
        self._authn = authenticator
        self._secret = internal_secret

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: Context
    ) -> external_auth_pb2.CheckResponse:
        headers = dict(request.attributes.request.http.headers)
        try:
            principal = await self._authn.authenticate(presented_secret(headers))
        except ServiceError as err:
            return self._deny(err.http_status, err.message)
        assertion = principals.sign(principal, self._secret)
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_header(principals.PRINCIPAL_HEADER, assertion)],
                headers_to_remove=["authorization"],
            ),
        )

    @staticmethod
    def _deny(http_status: int, message: str) -> external_auth_pb2.CheckResponse:
        # Plain text: Envoy's local_reply_config wraps it in the API's JSON error shape.
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(
                code=code_pb2.UNAUTHENTICATED, message=message or MISSING_TOKEN
            ),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status),
                body=message or MISSING_TOKEN,
            ),
        )
