"""Golem's `/healthcheck` (`{}`) and `/version` (`{"version": ...}`), public."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import grpc

from cairn.project.v1 import health_check_service_pb2 as pb
from cairn.project.v1 import health_check_service_pb2_grpc as pb_grpc
from cairn.runtime.rest import is_rest, json_body

Context = grpc.aio.ServicerContext[Any, Any]


def cairn_version() -> str:
    return metadata.version("cairn")


class HealthCheckApi(pb_grpc.HealthCheckServiceServicer):
    def __init__(self) -> None:
        self._version = cairn_version()

    async def Healthcheck(
        self, request: pb.HealthcheckRequest, context: Context
    ) -> pb.HealthcheckResponse:
        return pb.HealthcheckResponse(rest=json_body({}) if is_rest(context) else None)

    async def Version(self, request: pb.VersionRequest, context: Context) -> pb.VersionResponse:
        if is_rest(context):
            return pb.VersionResponse(rest=json_body({"version": self._version}))
        return pb.VersionResponse(version=self._version)
