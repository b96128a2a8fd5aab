"""`python -m cairn.project`: run the project service (projects, policies and grants)."""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from cairn.project.accounts import AuthAccountDirectory
from cairn.project.components import ComponentServiceDirectory
from cairn.project.grpc_api import ProjectApi, ProjectGrantApi, ProjectPolicyApi
from cairn.project.health_check import HealthCheckApi
from cairn.project.plugin_api import PluginApi, ProjectPluginApi
from cairn.project.plugins import PluginService
from cairn.project.service import ProjectService
from cairn.project.store import LEGACY_PREFIX, PREFIX, ProjectStore
from cairn.project.v1 import (
    health_check_service_pb2_grpc,
    plugin_service_pb2_grpc,
    project_grant_service_pb2_grpc,
    project_service_pb2_grpc,
)
from cairn.runtime.callers import CallerResolver
from cairn.runtime.entrypoint import Registrar, run_service
from cairn.runtime.redis import adopt_legacy_keys
from cairn.runtime.settings import Settings


async def setup(settings: Settings, redis: aioredis.Redis) -> Registrar:
    await adopt_legacy_keys(redis, LEGACY_PREFIX, PREFIX + ":")
    store = ProjectStore(redis)
    projects = ProjectService(
        store,
        accounts=AuthAccountDirectory(settings.address("auth"), settings.internal_secret),
    )
    plugins = PluginService(
        store,
        projects,
        ComponentServiceDirectory(settings.address("component"), settings.internal_secret),
    )
    callers = CallerResolver(settings.internal_secret, settings.address("auth"))

    def register(server: grpc.aio.Server) -> None:
        project_service_pb2_grpc.add_ProjectServiceServicer_to_server(
            ProjectApi(projects, callers), server
        )
        project_grant_service_pb2_grpc.add_ProjectGrantServiceServicer_to_server(
            ProjectGrantApi(projects, callers), server
        )
        project_grant_service_pb2_grpc.add_ProjectPolicyServiceServicer_to_server(
            ProjectPolicyApi(projects, callers), server
        )
        plugin_service_pb2_grpc.add_PluginServiceServicer_to_server(
            PluginApi(plugins, callers), server
        )
        plugin_service_pb2_grpc.add_ProjectPluginServiceServicer_to_server(
            ProjectPluginApi(plugins, callers), server
        )
        health_check_service_pb2_grpc.add_HealthCheckServiceServicer_to_server(
            HealthCheckApi(), server
        )

    return register


if __name__ == "__main__":
    run_service(
        "project",
        setup,
        extra_services=[
            "cairn.project.v1.ProjectGrantService",
            "cairn.project.v1.ProjectPolicyService",
            "cairn.project.v1.PluginService",
            "cairn.project.v1.ProjectPluginService",
            "cairn.project.v1.HealthCheckService",
        ],
    )
