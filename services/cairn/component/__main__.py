"""`python -m cairn.component`: run the component service (Component API and Template API)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
import redis.asyncio as aioredis

from cairn import blobstore
from cairn.component.access import ProjectGateway, UsageLedger
from cairn.component.grpc_api import ComponentApi, TemplateApi
from cairn.component.service import ComponentService
from cairn.component.settings import ComponentSettings
from cairn.component.store import LEGACY_PREFIX, PREFIX, ComponentStore
from cairn.component.v1 import component_service_pb2_grpc, template_service_pb2_grpc
from cairn.runtime.callers import CallerResolver
from cairn.runtime.entrypoint import Wiring, run_service
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.redis import adopt_legacy_keys
from cairn.runtime.scratch import ScratchDir
from cairn.runtime.settings import Settings

TEMPLATE_SERVICE = "cairn.component.v1.TemplateService"
SPOOL_PREFIX = "cairn-component-spool-"


async def setup(settings: Settings, redis: aioredis.Redis) -> Wiring:
    await adopt_legacy_keys(redis, LEGACY_PREFIX, PREFIX + ":")
    own = ComponentSettings.from_env(run_dir=settings.run_dir)
    # Uploads spool into a directory of this process's own; a crashed one's is swept here.
    spool = ScratchDir.claim(own.spool_dir or Path(tempfile.gettempdir()), SPOOL_PREFIX).path
    blobs = own.blob_store()
    service = ComponentService(
        ComponentStore(redis),
        blobs,
        ProjectGateway(settings.address("project"), settings.internal_secret),
        max_component_bytes=own.max_component_bytes,
        usage=UsageLedger(settings.address("auth"), settings.internal_secret),
        archive_limits=own.archive_limits,
    )
    callers = CallerResolver(settings.internal_secret, settings.address("auth"))
    components = ComponentApi(
        service, callers,
        spool_dir=spool, max_files_archive_bytes=own.max_files_archive_bytes,
        form_limits=own.form_limits,
    )
    templates = TemplateApi(
        service, callers,
        spool_dir=spool, max_files_archive_bytes=own.max_files_archive_bytes,
        form_limits=own.form_limits,
    )

    def register(server: grpc.aio.Server) -> None:
        component_service_pb2_grpc.add_ComponentServiceServicer_to_server(components, server)
        template_service_pb2_grpc.add_TemplateServiceServicer_to_server(templates, server)

    return Wiring(register, {"blobs": lambda: blobstore.probe(blobs)},
                  background=[service.keep_alive])


if __name__ == "__main__":
    run_service("component", setup, style=ErrorStyle.GOLEM, extra_services=[TEMPLATE_SERVICE])
