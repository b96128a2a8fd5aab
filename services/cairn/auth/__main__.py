"""`python -m cairn.auth`: run the auth service (also Envoy's ext_authz server)."""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis
from envoy.service.auth.v3 import external_auth_pb2_grpc

from cairn.auth.ext_authz import ExtAuthzApi, GolemTokenAuthorizer
from cairn.auth.grpc_api import AuthApi
from cairn.auth.service import Authenticator
from cairn.auth.store import AuthStore
from cairn.auth.v1 import auth_service_pb2_grpc
from cairn.runtime.entrypoint import Registrar, run_service
from cairn.runtime.settings import Settings


async def setup(settings: Settings, redis: aioredis.Redis) -> Registrar:
    store = AuthStore(redis)
    await store.bootstrap_root(
        settings.root_account_id, settings.root_account_email, settings.root_token
    )
    authenticator = Authenticator(store)

    def register(server: grpc.aio.Server) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthApi(authenticator), server)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            ExtAuthzApi(GolemTokenAuthorizer(authenticator), settings.internal_secret), server
        )

    return register


if __name__ == "__main__":
    run_service(
        "auth",
        setup,
        extra_services=["envoy.service.auth.v3.Authorization"],
        required=("redis_url", "internal_secret", "root_token"),
    )
