"""`python -m cairn.auth`: run the auth service (also Envoy's ext_authz server)."""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis
from envoy.service.auth.v3 import external_auth_pb2_grpc

from cairn.auth.callers import LocalCallers
from cairn.auth.ext_authz import (
    HEALTH_CHECK_PATHS,
    INTERNAL_PATHS,
    LOGIN_BOOTSTRAP_PATHS,
    ExtAuthzApi,
    GolemTokenAuthorizer,
    InternalOnlyAuthorizer,
    PublicAuthorizer,
    exact_paths,
)
from cairn.auth.grpc_api import (
    AccountApi,
    AccountSummaryApi,
    AuthApi,
    InternalServices,
    LoginApi,
    ResourceLimitsApi,
    TokenApi,
)
from cairn.auth.ledger_jwt import ledger_route
from cairn.auth.login import LoginService
from cairn.auth.service import (
    AccountService,
    AccountSummaryService,
    Authenticator,
    ResourceLimitsService,
    TokenService,
    UsageService,
)
from cairn.auth.settings import AuthSettings
from cairn.auth.store import LEGACY_PREFIX, PREFIX, AuthStore
from cairn.auth.token_cache import TokenCache
from cairn.auth.v1 import (
    account_service_pb2_grpc,
    auth_service_pb2_grpc,
    login_service_pb2_grpc,
    token_service_pb2_grpc,
)
from cairn.runtime.entrypoint import Wiring, run_service
from cairn.runtime.redis import adopt_legacy_keys
from cairn.runtime.settings import Settings


async def setup(settings: Settings, redis: aioredis.Redis) -> Wiring:
    auth_settings = AuthSettings.from_env()
    await adopt_legacy_keys(redis, LEGACY_PREFIX, PREFIX + ":")
    store = AuthStore(redis)
    await store.bootstrap_root(
        settings.root_account_id, settings.root_account_email, settings.root_token
    )
    await store.index_accounts()
    token_cache = TokenCache(auth_settings.token_cache_seconds)
    authenticator = Authenticator(store, token_cache)
    callers = LocalCallers(authenticator, settings.internal_secret)
    accounts = AccountService(store, auth_settings.plan, settings.root_account_id)
    tokens = TokenService(store)
    usage = UsageService(store, auth_settings.plan)
    login = LoginService(store, tokens, auth_settings)
    ext_authz = ExtAuthzApi(
        GolemTokenAuthorizer(authenticator),
        settings.internal_secret,
        # First match wins; unmatched paths take Golem tokens.
        routes=[
            (exact_paths(*LOGIN_BOOTSTRAP_PATHS, *HEALTH_CHECK_PATHS), PublicAuthorizer()),
            (exact_paths(*INTERNAL_PATHS), InternalOnlyAuthorizer()),
            ledger_route(settings.internal_secret),
        ],
    )

    def register(server: grpc.aio.Server) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
            AuthApi(authenticator, callers, InternalServices(accounts, usage)), server
        )
        account_service_pb2_grpc.add_AccountServiceServicer_to_server(
            AccountApi(accounts, callers), server
        )
        account_service_pb2_grpc.add_AccountSummaryServiceServicer_to_server(
            AccountSummaryApi(AccountSummaryService(store), callers), server
        )
        account_service_pb2_grpc.add_ResourceLimitsServiceServicer_to_server(
            ResourceLimitsApi(ResourceLimitsService(store, auth_settings.plan), callers), server
        )
        token_service_pb2_grpc.add_TokenServiceServicer_to_server(
            TokenApi(tokens, callers), server
        )
        login_service_pb2_grpc.add_LoginServiceServicer_to_server(
            LoginApi(login, tokens, callers), server
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(ext_authz, server)

    return Wiring(register, background=[lambda: token_cache.follow(redis)])


if __name__ == "__main__":
    run_service(
        "auth",
        setup,
        extra_services=[
            "envoy.service.auth.v3.Authorization",
            "cairn.auth.v1.AccountService",
            "cairn.auth.v1.AccountSummaryService",
            "cairn.auth.v1.ResourceLimitsService",
            "cairn.auth.v1.TokenService",
            "cairn.auth.v1.LoginService",
        ],
        required=("redis", "internal_secret", "root_token"),
    )
