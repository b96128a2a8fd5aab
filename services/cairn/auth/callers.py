"""Who calls the auth service: resolved locally, without a gRPC round trip to itself.

Same rules as `cairn.runtime.callers`: a signed `x-cairn-principal` (from Envoy's ext_authz or
another Cairn service) is trusted only if its HMAC verifies; otherwise the caller's own bearer
token is authenticated. Internal RPCs accept only the signed assertion of a Cairn service.
"""

from __future__ import annotations

from typing import Any

import grpc

from cairn.auth.service import MISSING_TOKEN, Authenticator
from cairn.runtime import principal as principals
from cairn.runtime.callers import bearer_secret
from cairn.runtime.errors import PermissionDenied, Unauthenticated
from cairn.runtime.principal import Principal

Context = grpc.aio.ServicerContext[Any, Any]
SERVICES_ONLY = "This method is only for Cairn services"


class LocalCallers:
    def __init__(self, authenticator: Authenticator, internal_secret: str) -> None:
        self._authn = authenticator
        self._verify = principals.Verifier(internal_secret)

    def _asserted(self, context: Context) -> Principal | None:
        assertion = dict(context.invocation_metadata() or ()).get(principals.PRINCIPAL_HEADER)
        if not isinstance(assertion, str):
            return None
        return self._verify(assertion)

    async def resolve(self, context: Context) -> Principal:
        trusted = self._asserted(context)
        if trusted is not None:
            return trusted
        authorization = dict(context.invocation_metadata() or ()).get("authorization")
        secret = bearer_secret(authorization) if isinstance(authorization, str) else ""
        if not secret:
            raise Unauthenticated(MISSING_TOKEN)
        return await self._authn.authenticate(secret)

    def require_service(self, context: Context) -> Principal:
        """The principal a Cairn service asserts; anything else is refused.

        Envoy never forwards these methods (ext_authz denies them), so a verified assertion here
        comes from a service holding the internal secret.
        """
        trusted = self._asserted(context)
        if trusted is None:
            raise PermissionDenied(SERVICES_ONLY)
        return trusted
