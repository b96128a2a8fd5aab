"""The auth service's internal RPCs over real sockets: plan usage and account lookup.

They serve only callers holding the internal secret (a signed service assertion); a bearer token,
even an admin's, is refused, and a forged assertion too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
import redis.asyncio as aioredis

from cairn.auth.callers import LocalCallers
from cairn.auth.grpc_api import AuthApi, InternalServices
from cairn.auth.service import AccountService, Authenticator, UsageService
from cairn.auth.settings import Plan
from cairn.auth.store import FAR_FUTURE, Account, AuthStore
from cairn.auth.v1 import auth_service_pb2 as pb
from cairn.auth.v1 import auth_service_pb2_grpc as pb_grpc
from cairn.runtime.callers import as_caller
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.principal import Principal
from cairn.runtime.server import RunningServer, start_server

SECRET = "internal-secret-for-tests"
PLAN = Plan(
    component_limit=3,
    storage_limit=10_000_000,
    monthly_upload_limit=25_000_000,
)


@dataclass
class Internal:
    server: RunningServer
    store: AuthStore
    stub: pb_grpc.AuthServiceAsyncStub
    root_token: str

    async def account(self) -> str:
        account_id = str(uuid.uuid4())
        await self.store.put_account(Account(account_id, "a", "a@example.com"))
        return account_id


def service_caller() -> tuple[tuple[str, str], ...]:
    """A service's signed assertion, made fresh: it expires two minutes after signing, and a
    long suite can run a test later than that after this module was imported."""
    return as_caller(Principal("component-service-caller"), SECRET)


@pytest.fixture
async def internal(redis: aioredis.Redis) -> AsyncIterator[Internal]:
    store = AuthStore(redis)
    root_token = str(uuid.uuid4())
    await store.bootstrap_root("root", "root@example.com", root_token)
    authn = Authenticator(store)
    services = InternalServices(AccountService(store, PLAN, "root"), UsageService(store, PLAN))

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_AuthServiceServicer_to_server(
            AuthApi(authn, LocalCallers(authn, SECRET), services), server
        )

    server = await start_server(register=register, services=["cairn.auth.v1.AuthService"],
                                style=ErrorStyle.GOLEM)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield Internal(server, store, pb_grpc.AuthServiceStub(channel), root_token)
    await channel.close(None)
    await server.stop(0)


def usage(account: str, count: int = 0, storage: int = 0, upload: int = 0
          ) -> pb.RecordComponentUsageRequest:
    return pb.RecordComponentUsageRequest(
        account_id=account, component_count_delta=count, storage_bytes_delta=storage,
        upload_bytes=upload,
    )


async def test_usage_is_recorded_and_reported(internal: Internal) -> None:
    account = await internal.account()
    reply = await internal.stub.RecordComponentUsage(
        usage(account, 1, 1_000_000, 1_000_000), metadata=service_caller()
    )
    assert (reply.usage.component_count, reply.usage.storage_bytes,
            reply.usage.monthly_upload_bytes) == (1, 1_000_000, 1_000_000)
    assert reply.plan.component_limit == 3 and reply.plan.storage_limit == 10_000_000
    # A new version: no new component, more storage and upload.
    reply = await internal.stub.RecordComponentUsage(
        usage(account, 0, 2_000_000, 2_000_000), metadata=service_caller()
    )
    assert (reply.usage.component_count, reply.usage.storage_bytes,
            reply.usage.monthly_upload_bytes) == (1, 3_000_000, 3_000_000)
    # Releasing (a failed upload compensated) never goes below zero; the month's upload stays.
    reply = await internal.stub.RecordComponentUsage(
        usage(account, -5, -9_000_000, 0), metadata=service_caller()
    )
    assert (reply.usage.component_count, reply.usage.storage_bytes,
            reply.usage.monthly_upload_bytes) == (0, 0, 3_000_000)


async def expect_limit(internal: Internal, request: pb.RecordComponentUsageRequest,
                       message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await internal.stub.RecordComponentUsage(request, metadata=service_caller())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == message
    # grpc.aio gives (key, value) pairs; its type stubs say otherwise.
    trailers = dict(cast(Any, err.value.trailing_metadata()))
    assert trailers["x-http-status"] == "403"


async def test_each_limit_refuses_with_golems_message_and_records_nothing(
    internal: Internal,
) -> None:
    account = await internal.account()
    for _ in range(3):
        await internal.stub.RecordComponentUsage(usage(account, 1, 100, 100),
                                                 metadata=service_caller())
    await expect_limit(internal, usage(account, 1, 100, 100),
                       "Limit exceeded: Limit Exceeded: Component limit exceeded (limit: 3)")
    await expect_limit(
        internal, usage(account, 0, 9_999_901, 100),
        f"Limit exceeded: Limit Exceeded: Storage limit exceeded for account: {account} "
        "(limit: 10 MB)",
    )
    for _ in range(3):
        await internal.stub.RecordComponentUsage(usage(account, 0, 0, 8_000_000),
                                                 metadata=service_caller())
    await expect_limit(
        internal, usage(account, 0, 0, 1_000_000),
        f"Limit exceeded: Limit Exceeded: Upload limit exceeded for account: {account} "
        "(limit: 25 MB)",
    )
    # Nothing of the refused calls was recorded.
    reply = await internal.stub.RecordComponentUsage(usage(account), metadata=service_caller())
    assert (reply.usage.component_count, reply.usage.storage_bytes,
            reply.usage.monthly_upload_bytes) == (3, 300, 24_000_300)


async def test_concurrent_creations_never_overshoot_the_component_limit(
    internal: Internal,
) -> None:
    account = await internal.account()
    results = await asyncio.gather(
        *(internal.stub.RecordComponentUsage(usage(account, 1, 10, 10), metadata=service_caller())
          for _ in range(20)),
        return_exceptions=True,
    )
    accepted = [r for r in results if isinstance(r, pb.RecordComponentUsageResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(accepted) == 3 and len(refused) == 17
    assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}


async def test_usage_of_an_unknown_account_is_not_found(internal: Internal) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await internal.stub.RecordComponentUsage(usage("nobody", 1), metadata=service_caller())
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_internal_methods_refuse_bearer_tokens_and_forged_assertions(
    internal: Internal,
) -> None:
    account = await internal.account()
    admin = (("authorization", f"Bearer {internal.root_token}"),)
    forged = as_caller(Principal("root", roles=("Admin",)), "not-the-secret")
    for metadata in (admin, forged, ()):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await internal.stub.RecordComponentUsage(usage(account, 1), metadata=metadata)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == "This method is only for Cairn services"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await internal.stub.LookupAccount(pb.LookupAccountRequest(account_id=account),
                                              metadata=metadata)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_lookup_account_returns_the_account_and_its_plan(internal: Internal) -> None:
    account = await internal.account()
    reply = await internal.stub.LookupAccount(pb.LookupAccountRequest(account_id=account),
                                              metadata=service_caller())
    assert (reply.account_id, reply.name, reply.email) == (account, "a", "a@example.com")
    assert reply.plan.plan_id == "00000000-0000-0000-0000-000000000000"
    assert reply.plan.project_limit == 100 and reply.plan.component_limit == 3
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await internal.stub.LookupAccount(pb.LookupAccountRequest(account_id="nobody"),
                                          metadata=service_caller())
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_authenticate_refuses_expired_and_unknown_tokens(internal: Internal) -> None:
    account = await internal.account()
    expired = str(uuid.uuid4())
    await internal.store.add_token(account, expired, "2000-01-01T00:00:00Z")
    live = str(uuid.uuid4())
    token = await internal.store.add_token(account, live, FAR_FUTURE)
    reply = await internal.stub.Authenticate(pb.AuthenticateRequest(token_secret=live),
                                             metadata=service_caller())
    assert (reply.principal.account_id, reply.principal.token_id) == (account, token.id)
    for secret, message in ((expired, "Invalid Token: Expired auth token."),
                            (str(uuid.uuid4()), "Invalid Token: Unknown token secret.")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await internal.stub.Authenticate(pb.AuthenticateRequest(token_secret=secret),
                                             metadata=service_caller())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.details() == message


async def test_authenticate_is_no_token_oracle_for_callers_without_the_internal_credential(
    internal: Internal,
) -> None:
    """Whoever reaches the auth port without a service assertion learns nothing about a token."""
    forged = as_caller(Principal("component-service-caller"), "not-the-internal-secret")
    bearer = (("authorization", f"Bearer {internal.root_token}"),)
    for metadata in ((), forged, bearer):
        for secret in (internal.root_token, str(uuid.uuid4())):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await internal.stub.Authenticate(pb.AuthenticateRequest(token_secret=secret),
                                                 metadata=metadata)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert err.value.details() == "This method is only for Cairn services"
