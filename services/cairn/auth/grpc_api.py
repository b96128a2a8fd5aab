"""gRPC surface of the auth service for other services (Envoy's ext_authz is in `ext_authz`)."""

from __future__ import annotations

from typing import Any

import grpc

from cairn.auth.service import Authenticator
from cairn.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


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
