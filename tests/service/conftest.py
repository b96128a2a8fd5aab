"""Service tests: the real servicers and interceptors on real sockets, against a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import redis.asyncio as aioredis
from envoy.service.auth.v3 import external_auth_pb2_grpc

from cairn.auth.callers import LocalCallers
from cairn.auth.ext_authz import ExtAuthzApi, GolemTokenAuthorizer
from cairn.auth.grpc_api import AuthApi
from cairn.auth.service import Authenticator
from cairn.auth.store import FAR_FUTURE, Account, AuthStore
from cairn.auth.v1 import auth_service_pb2_grpc
from cairn.project.grpc_api import ProjectApi
from cairn.project.service import ProjectService
from cairn.project.store import ProjectStore
from cairn.project.v1 import project_service_pb2_grpc
from cairn.runtime.callers import CallerResolver
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.server import RunningServer, start_server

INTERNAL_SECRET = "test-internal-secret"


@dataclass
class Services:
    auth: RunningServer
    project: RunningServer
    store: AuthStore
    root_token: str

    @property
    def project_address(self) -> str:
        return f"127.0.0.1:{self.project.port}"

    @property
    def auth_address(self) -> str:
        return f"127.0.0.1:{self.auth.port}"

    async def new_account(self, name: str, *, expires_at: str = FAR_FUTURE) -> tuple[str, str]:
        """A fresh account and a token secret for it: (account id, secret)."""
        account_id = str(uuid.uuid4())
        await self.store.put_account(Account(account_id, name, f"{name}@example.com"))
        secret = str(uuid.uuid4())
        await self.store.add_token(account_id, secret, expires_at)
        return account_id, secret


@pytest.fixture
async def services(redis: aioredis.Redis) -> AsyncIterator[Services]:
    store = AuthStore(redis)
    root_token = str(uuid.uuid4())
    await store.bootstrap_root("root", "root@example.com", root_token)
    authn = Authenticator(store)

    def register_auth(server: grpc.aio.Server) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
            AuthApi(authn, LocalCallers(authn, INTERNAL_SECRET)), server
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            ExtAuthzApi(GolemTokenAuthorizer(authn), INTERNAL_SECRET), server
        )

    auth = await start_server(register=register_auth, services=["cairn.auth.v1.AuthService"],
                              style=ErrorStyle.GOLEM)
    resolver = CallerResolver(INTERNAL_SECRET, f"127.0.0.1:{auth.port}")
    api = ProjectApi(ProjectService(ProjectStore(redis)), resolver)

    def register_project(server: grpc.aio.Server) -> None:
        project_service_pb2_grpc.add_ProjectServiceServicer_to_server(api, server)

    project = await start_server(register=register_project,
                                 services=["cairn.project.v1.ProjectService"],
                                 style=ErrorStyle.GOLEM)
    yield Services(auth, project, store, root_token)
    await project.stop(0)
    await auth.stop(0)
