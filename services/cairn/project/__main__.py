"""`python -m cairn.project`: run the project service."""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from cairn.project.grpc_api import ProjectApi
from cairn.project.service import ProjectService
from cairn.project.store import ProjectStore
from cairn.project.v1 import project_service_pb2_grpc
from cairn.runtime.callers import CallerResolver
from cairn.runtime.entrypoint import Registrar, run_service
from cairn.runtime.settings import Settings


async def setup(settings: Settings, redis: aioredis.Redis) -> Registrar:
    api = ProjectApi(
        ProjectService(ProjectStore(redis)),
        CallerResolver(settings.internal_secret, settings.address("auth")),
    )

    def register(server: grpc.aio.Server) -> None:
        project_service_pb2_grpc.add_ProjectServiceServicer_to_server(api, server)

    return register


if __name__ == "__main__":
    run_service("project", setup)
