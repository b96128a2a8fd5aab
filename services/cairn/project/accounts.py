"""The project service's view of accounts: asked of the auth service's internal LookupAccount."""

from __future__ import annotations

import grpc

from cairn.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cairn.project.service import AccountInfo
from cairn.runtime.callers import as_caller
from cairn.runtime.channels import internal_channel, unavailable_peer
from cairn.runtime.errors import Unavailable
from cairn.runtime.principal import Principal


class AuthAccountDirectory:
    """AccountDirectory over gRPC; one channel per process, opened on first use."""

    def __init__(self, auth_address: str, internal_secret: str) -> None:
        self._address = auth_address
        self._secret = internal_secret
        self._stub: auth_service_pb2_grpc.AuthServiceAsyncStub | None = None

    def _auth(self) -> auth_service_pb2_grpc.AuthServiceAsyncStub:
        if self._stub is None:
            channel = internal_channel(self._address)
            self._stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return self._stub

    async def lookup(self, caller: Principal, account_id: str) -> AccountInfo | None:
        try:
            reply = await self._auth().LookupAccount(
                auth_service_pb2.LookupAccountRequest(account_id=account_id),
                metadata=as_caller(caller, self._secret),
                timeout=5,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise unavailable_peer(err, "auth") or Unavailable(
                f"The auth service failed: {err.details()}") from None
        return AccountInfo(reply.account_id, reply.plan.project_limit)
