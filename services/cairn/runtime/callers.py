"""Resolve the caller of an RPC: Envoy's signed principal header, else the caller's bearer token."""

from __future__ import annotations

from typing import Any

import grpc

from cairn.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cairn.runtime import principal as principals
from cairn.runtime.channels import internal_channel, unavailable_peer
from cairn.runtime.errors import Unauthenticated
from cairn.runtime.principal import Principal

UNAUTHORIZED = "Unauthorized"


def as_caller(principal: Principal, internal_secret: str) -> tuple[tuple[str, str], ...]:
    """Metadata for calling another Cairn service on behalf of `principal`."""
    return ((principals.PRINCIPAL_HEADER, principals.sign(principal, internal_secret)),)


def bearer_secret(authorization: str) -> str:
    scheme, _, secret = authorization.strip().partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


class CallerResolver:
    """One per service process; shares a channel to the auth service."""

    def __init__(self, internal_secret: str, auth_address: str) -> None:
        self._secret = internal_secret
        self._verify = principals.Verifier(internal_secret)
        self._auth_address = auth_address
        self._stub: auth_service_pb2_grpc.AuthServiceAsyncStub | None = None

    def _auth(self) -> auth_service_pb2_grpc.AuthServiceAsyncStub:
        if self._stub is None:
            channel = internal_channel(self._auth_address)
            self._stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return self._stub

    async def resolve(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        metadata = dict(context.invocation_metadata() or ())
        assertion = metadata.get(principals.PRINCIPAL_HEADER)
        if isinstance(assertion, str):
            trusted = self._verify(assertion)
            if trusted is not None:
                return trusted
        authorization = metadata.get("authorization")
        secret = bearer_secret(authorization) if isinstance(authorization, str) else ""
        if not secret:
            raise Unauthenticated(UNAUTHORIZED)
        try:
            reply = await self._auth().Authenticate(
                auth_service_pb2.AuthenticateRequest(token_secret=secret),
                metadata=as_caller(principals.SERVICE, self._secret),
                timeout=5,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(err.details() or UNAUTHORIZED) from None
            raise unavailable_peer(err, "auth") or err from None
        p = reply.principal
        return Principal(p.account_id, p.token_id, tuple(p.roles))
