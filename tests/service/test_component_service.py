"""The component service over real gRPC sockets, with the real project service, Redis and a disk
blob store: typed gRPC and REST-shaped replies, versions, uploads that fail or are cut short,
size limits, plugins, access, events, the Template API alias, and the metadata stored for every
Golem fixture.

Callers present a signed principal (as Envoy's ext_authz would), so no auth service is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import boto3  # type: ignore[import-untyped]
import grpc
import pytest
import redis.asyncio as aioredis
from google.api import httpbody_pb2

from cairn.blobstore import BlobStore, DiskBlobStore, S3BlobStore
from cairn.blobstore.factory import make_minio_client
from cairn.component.access import ProjectGateway
from cairn.component.grpc_api import ComponentApi, TemplateApi
from cairn.component.model import ComponentVersion
from cairn.component.service import ComponentService
from cairn.component.store import EVENTS_CHANNEL, ComponentStore
from cairn.component.v1 import component_service_pb2 as pb
from cairn.component.v1 import component_service_pb2_grpc as pb_grpc
from cairn.component.v1 import template_service_pb2 as template_pb
from cairn.component.v1 import template_service_pb2_grpc as template_grpc
from cairn.component.wasm import analyse_component, metadata_to_json
from cairn.project.grpc_api import ProjectApi
from cairn.project.plugin_api import PluginApi
from cairn.project.plugins import PluginService
from cairn.project.service import ProjectService
from cairn.project.store import ProjectStore
from cairn.project.v1 import plugin_service_pb2 as plugin_pb
from cairn.project.v1 import plugin_service_pb2_grpc as plugin_grpc
from cairn.project.v1 import project_service_pb2 as project_pb
from cairn.project.v1 import project_service_pb2_grpc as project_grpc
from cairn.runtime.callers import CallerResolver, as_caller
from cairn.runtime.errors import ErrorStyle
from cairn.runtime.principal import Principal
from cairn.runtime.rest import REST_MARKER
from cairn.runtime.server import RunningServer, start_server

SECRET = "component-test-secret"
SIZE_LIMIT = 3_000_000  # above every fixture (the largest is 2.3 MB), below the oversized upload
CHUNK = 64 * 1024
BOUNDARY = "cairn-test-boundary-7f3a"


@dataclass
class Env:
    component: RunningServer
    project: RunningServer
    blob_root: Path
    spool_dir: Path
    redis: aioredis.Redis
    fixtures: Path

    @property
    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.component.port}")

    def components(self) -> pb_grpc.ComponentServiceAsyncStub:
        return pb_grpc.ComponentServiceStub(self.channel)

    def templates(self) -> template_grpc.TemplateServiceAsyncStub:
        return template_grpc.TemplateServiceStub(self.channel)

    def wasm(self, name: str) -> bytes:
        return (self.fixtures / "golem" / "wasm" / name).read_bytes()

    def blobs(self) -> list[Path]:
        if not self.blob_root.exists():
            return []
        return sorted(p for p in self.blob_root.rglob("*") if p.is_file() and
                      not p.name.startswith("."))

    async def project_of(self, caller: Principal, name: str) -> str:
        stub = project_grpc.ProjectServiceStub(
            grpc.aio.insecure_channel(f"127.0.0.1:{self.project.port}")
        )
        reply = await stub.CreateProject(
            project_pb.CreateProjectRequest(
                name=name, owner_account_id=caller.account_id, description=""
            ),
            metadata=as_caller(caller, SECRET),
        )
        return reply.project.project_id


@contextlib.asynccontextmanager
async def running_env(
    redis: aioredis.Redis,
    tmp_path: Path,
    fixtures: Path,
    blobs: BlobStore,
    store: ComponentStore | None = None,
) -> AsyncIterator[Env]:
    """The project and component services on real sockets, storing blobs in `blobs`."""
    # Nobody listens on the auth address: every caller here presents a signed principal.
    callers = CallerResolver(SECRET, "127.0.0.1:9")
    projects = ProjectService(ProjectStore(redis))
    project_api = ProjectApi(projects, callers)
    plugin_api = PluginApi(PluginService(ProjectStore(redis), projects), callers)

    def register_project(server: grpc.aio.Server) -> None:
        project_grpc.add_ProjectServiceServicer_to_server(project_api, server)
        plugin_grpc.add_PluginServiceServicer_to_server(plugin_api, server)

    project = await start_server(
        register=register_project,
        services=["cairn.project.v1.ProjectService", "cairn.project.v1.PluginService"],
        style=ErrorStyle.GOLEM,
    )
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    service = ComponentService(
        store or ComponentStore(redis),
        blobs,
        ProjectGateway(f"127.0.0.1:{project.port}", SECRET),
        max_component_bytes=SIZE_LIMIT,
    )
    components = ComponentApi(service, callers, spool_dir=spool_dir)
    templates = TemplateApi(service, callers, spool_dir=spool_dir)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_ComponentServiceServicer_to_server(components, server)
        template_grpc.add_TemplateServiceServicer_to_server(templates, server)

    component = await start_server(
        register=register,
        services=["cairn.component.v1.ComponentService"],
        style=ErrorStyle.GOLEM,
    )
    try:
        yield Env(component, project, tmp_path / "blobs", spool_dir, redis, fixtures)
    finally:
        await component.stop(0)
        await project.stop(0)


@pytest.fixture
async def env(
    redis: aioredis.Redis, tmp_path: Path, shared_fixtures: Path
) -> AsyncIterator[Env]:
    async with running_env(
        redis, tmp_path, shared_fixtures, DiskBlobStore(tmp_path / "blobs")
    ) as running:
        yield running


ALICE = Principal("alice")
BOB = Principal("bob")


def grpc_md(caller: Principal = ALICE) -> tuple[tuple[str, str], ...]:
    return as_caller(caller, SECRET)


def rest_md(caller: Principal = ALICE) -> tuple[tuple[str, str], ...]:
    return (*as_caller(caller, SECRET), (REST_MARKER, "1"))


def chunks(data: bytes, size: int = CHUNK) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def native_create(
    name: str, wasm: bytes, *, project_id: str | None = None, files: bytes | None = None,
    permissions: Iterable[tuple[str, int]] = (), component_type: int = 0,
) -> list[pb.CreateComponentRequest]:
    header = pb.CreateComponentHeader(
        component_name=name,
        component_type=component_type,  # type: ignore[arg-type]
        files_permissions=[
            pb.FilePathPermissions(path=p, permissions=m)  # type: ignore[arg-type]
            for p, m in permissions
        ],
    )
    if project_id is not None:
        header.project_id = project_id
    messages = [pb.CreateComponentRequest(header=header)]
    messages += [pb.CreateComponentRequest(component_chunk=c) for c in chunks(wasm)]
    messages += [pb.CreateComponentRequest(files_chunk=c) for c in chunks(files or b"")]
    return messages


def multipart(fields: list[tuple[str, bytes, str | None]]) -> bytes:
    """A multipart/form-data body: (name, value, filename or None)."""
    out = bytearray()
    for name, value, filename in fields:
        out += f"--{BOUNDARY}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        content_type = "application/octet-stream" if filename else "application/json"
        out += f"Content-Type: {content_type}\r\n\r\n".encode()
        out += value + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def rest_stream(body: bytes, content_type: str, **first_fields: Any) -> list[Any]:
    """A transcoded upload as Envoy sends it: the body in ~CHUNK slices of `rest`."""
    messages: list[Any] = []
    for index, piece in enumerate(chunks(body)):
        rest = httpbody_pb2.HttpBody(data=piece)
        if index == 0:
            rest.content_type = content_type
        messages.append((first_fields if index == 0 else {}, rest))
    return messages


def create_rest_requests(body: bytes) -> list[pb.CreateComponentRequest]:
    return [
        pb.CreateComponentRequest(rest=rest)
        for _, rest in rest_stream(body, f"multipart/form-data; boundary={BOUNDARY}")
    ]


async def rest_error(call: Any) -> tuple[int, dict[str, Any]]:
    """The REST status and body a failed call carries for Envoy's shaper."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    # grpc.aio hands back (key, value) tuples, whatever its stubs say.
    trailers: dict[str, Any] = dict(cast(Any, caught.value.trailing_metadata() or ()))
    return int(trailers["x-http-status"]), json.loads(trailers["x-http-body"])


async def eventually(condition: Callable[[], bool], polls: int = 500) -> bool:
    """Poll a condition on the file system every 20 ms (10 s at most); its last value."""
    for _ in range(polls):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def create_cart(env: Env, name: str = "shopping-cart", **kwargs: Any) -> pb.Component:
    reply = await env.components().CreateComponent(
        iter(native_create(name, env.wasm("wasmast_shopping-cart.wasm"), **kwargs)),
        metadata=grpc_md(),
    )
    return reply.component


async def download(env: Env, component_id: str, version: int | None = None) -> bytes:
    request = pb.DownloadComponentRequest(component_id=component_id)
    if version is not None:
        request.version = version
    parts = [m.data async for m in env.components().DownloadComponent(request,
                                                                     metadata=grpc_md())]
    return b"".join(parts)


# --------------------------------------------------------------------------------------------


async def test_native_create_stores_version_zero_with_metadata_files_and_defaults(
    env: Env,
) -> None:
    wasm = env.wasm("wasmast_shopping-cart.wasm")
    files = {"config.json": b'{"a":1}', "data/readme.txt": b"hello"}
    created = await create_cart(
        env, files=zip_of(files), permissions=[("/data/readme.txt", pb.FILE_PERMISSIONS_READ_WRITE)]
    )
    assert created.version == 0
    assert created.component_name == "shopping-cart"
    assert created.component_size == len(wasm)
    assert created.sha256 == hashlib.sha256(wasm).hexdigest()
    assert created.component_type == pb.COMPONENT_TYPE_DURABLE
    assert uuid.UUID(created.component_id)
    # No project id: the caller's default project.
    default = await project_grpc.ProjectServiceStub(
        grpc.aio.insecure_channel(f"127.0.0.1:{env.project.port}")
    ).GetDefaultProject(project_pb.GetDefaultProjectRequest(), metadata=grpc_md())
    assert created.project_id == default.project.project_id
    assert sorted((f.path, f.key, f.permissions) for f in created.files) == [
        ("/config.json", hashlib.sha256(b'{"a":1}').hexdigest(), pb.FILE_PERMISSIONS_READ_ONLY),
        ("/data/readme.txt", hashlib.sha256(b"hello").hexdigest(), pb.FILE_PERMISSIONS_READ_WRITE),
    ]
    expected = metadata_to_json(analyse_component(wasm))
    instance = created.metadata.exports[0].instance
    assert instance.name == expected["exports"][0]["name"] == "golem:it/api"
    assert [f.name for f in instance.functions] == [
        f["name"] for f in expected["exports"][0]["functions"]
    ]
    assert [(m.initial, m.HasField("maximum")) for m in created.metadata.memories] == [
        (1114112, False)
    ]
    assert len(created.metadata.producers) == len(expected["producers"])
    # The initial files are in the blob store under their content hash.
    assert (env.blob_root / "initial-files" / hashlib.sha256(b"hello").hexdigest()).read_bytes() \
        == b"hello"
    assert await download(env, created.component_id) == wasm


async def test_rest_create_answers_golem_json_exactly(env: Env) -> None:
    wasm = env.wasm("wasmast_shopping-cart.wasm")
    project_id = await env.project_of(ALICE, "rest-project")
    body = multipart([
        ("query", json.dumps({"projectId": project_id, "componentName": "cart"}).encode(), None),
        ("componentType", b'"Ephemeral"', None),
        ("component", wasm, "cart.wasm"),
        ("files", zip_of({"a.txt": b"A"}), "files.zip"),
    ])
    reply = await env.components().CreateComponent(
        iter(create_rest_requests(body)), metadata=rest_md()
    )
    assert reply.rest.content_type == "application/json; charset=utf-8"
    document = json.loads(reply.rest.data)
    component_id = document["versionedComponentId"]["componentId"]
    expected_metadata = metadata_to_json(analyse_component(wasm))
    assert document == {
        "versionedComponentId": {"componentId": component_id, "version": 0},
        "componentName": "cart",
        "componentSize": len(wasm),
        "metadata": expected_metadata,
        "projectId": project_id,
        "createdAt": document["createdAt"],
        "componentType": "Ephemeral",
        "files": [
            {"key": hashlib.sha256(b"A").hexdigest(), "path": "/a.txt", "permissions": "read-only"}
        ],
        "installedPlugins": [],
    }
    assert list(document) == [
        "versionedComponentId", "componentName", "componentSize", "metadata", "projectId",
        "createdAt", "componentType", "files", "installedPlugins",
    ]
    assert document["createdAt"].endswith("Z")
    assert not reply.HasField("component")


async def test_names_are_unique_per_project_with_golems_409(env: Env) -> None:
    first = await create_cart(env)
    status, body = await rest_error(
        env.components().CreateComponent(
            iter(native_create("shopping-cart", env.wasm("rust-echo.wasm"))), metadata=grpc_md()
        )
    )
    assert (status, body) == (409, {"error": f"Component already exists: {first.component_id}"})
    # The same name in another project is fine.
    other = await env.project_of(ALICE, "other")
    again = await create_cart(env, project_id=other)
    assert again.project_id == other and again.component_id != first.component_id


async def test_upload_and_update_add_versions_carrying_over_type_and_files(env: Env) -> None:
    created = await create_cart(
        env, files=zip_of({"f": b"1"}), component_type=pb.COMPONENT_TYPE_EPHEMERAL
    )
    v1_wasm = env.wasm("update-test-v1.wasm")
    upload = [pb.UploadComponentRequest(component_id=created.component_id)]
    upload += [pb.UploadComponentRequest(chunk=c) for c in chunks(v1_wasm)]
    v1 = (await env.components().UploadComponent(iter(upload), metadata=grpc_md())).component
    assert (v1.version, v1.component_type, v1.component_size) == (
        1, pb.COMPONENT_TYPE_EPHEMERAL, len(v1_wasm)
    )
    assert [f.path for f in v1.files] == ["/f"]

    # Through REST, with ?component_type= overriding the previous type.
    v2_wasm = env.wasm("update-test-v2.wasm")
    raw = [
        pb.UploadComponentRequest(component_id=created.component_id, component_type="Durable",
                                  rest=rest) if i == 0 else pb.UploadComponentRequest(rest=rest)
        for i, (_, rest) in enumerate(rest_stream(v2_wasm, "application/octet-stream"))
    ]
    reply = await env.components().UploadComponent(iter(raw), metadata=rest_md())
    document = json.loads(reply.rest.data)
    assert document["versionedComponentId"]["version"] == 2
    assert document["componentType"] == "Durable"

    # A multipart update replacing the files.
    body = multipart([
        ("component", env.wasm("rust-echo.wasm"), "echo.wasm"),
        ("filesPermissions", b'{"values":[{"path":"/g","permissions":"read-write"}]}', None),
        ("files", zip_of({"g": b"2"}), "files.zip"),
    ])
    update = [
        pb.UpdateComponentRequest(component_id=created.component_id, rest=r.rest) if i == 0
        else pb.UpdateComponentRequest(rest=r.rest)
        for i, r in enumerate(create_rest_requests(body))
    ]
    reply = await env.components().UpdateComponent(iter(update), metadata=rest_md())
    document = json.loads(reply.rest.data)
    assert document["versionedComponentId"]["version"] == 3
    assert document["componentType"] == "Durable"
    assert document["files"] == [
        {"key": hashlib.sha256(b"2").hexdigest(), "path": "/g", "permissions": "read-write"}
    ]

    versions = await env.components().GetComponentVersions(
        pb.GetComponentVersionsRequest(component_id=created.component_id), metadata=grpc_md()
    )
    assert [v.version for v in versions.components] == [0, 1, 2, 3]
    expected = [env.wasm("wasmast_shopping-cart.wasm"), v1_wasm, v2_wasm,
                env.wasm("rust-echo.wasm")]
    for version, wasm in enumerate(expected):
        assert await download(env, created.component_id, version) == wasm
    assert await download(env, created.component_id) == expected[-1]
    latest = await env.components().GetLatestComponent(
        pb.GetLatestComponentRequest(component_id=created.component_id), metadata=grpc_md()
    )
    assert latest.component.version == 3


@pytest.mark.parametrize(
    "fixture", ["negative_core-module_moonbit-release.wasm",
                "negative_old-component-encoding-0x0c.wasm"]
)
async def test_invalid_binaries_are_400_and_leave_nothing_behind(env: Env, fixture: str) -> None:
    created = await create_cart(env)
    blobs_before = env.blobs()
    bad = env.wasm(fixture)
    status, body = await rest_error(
        env.components().CreateComponent(iter(native_create("bad", bad)), metadata=grpc_md())
    )
    assert status == 400 and len(body["errors"]) == 1
    assert body["errors"][0].startswith(("Parsing error: ", "Analysis error: "))
    upload = [pb.UploadComponentRequest(component_id=created.component_id)]
    upload += [pb.UploadComponentRequest(chunk=c) for c in chunks(bad)]
    status, _ = await rest_error(env.components().UploadComponent(iter(upload),
                                                                  metadata=grpc_md()))
    assert status == 400
    assert env.blobs() == blobs_before
    assert list(env.spool_dir.iterdir()) == []
    listed = await env.components().ListComponents(pb.ListComponentsRequest(), metadata=grpc_md())
    assert [(c.component_name, c.version) for c in listed.components] == [("shopping-cart", 0)]


async def test_oversized_upload_is_403_limit_and_stores_nothing(env: Env) -> None:
    created = await create_cart(env)
    blobs_before = env.blobs()
    oversized = env.wasm("wasmast_shopping-cart.wasm") * 8  # 3.4 MB > 3 MB limit
    status, body = await rest_error(
        env.components().CreateComponent(iter(native_create("big", oversized)),
                                         metadata=grpc_md())
    )
    assert status == 403 and "limit" in body["error"]
    assert body == {
        "error": "Limit exceeded: Limit Exceeded: Component size limit exceeded (limit: 3MB)"
    }
    raw = [pb.UploadComponentRequest(component_id=created.component_id, rest=rest) if i == 0
           else pb.UploadComponentRequest(rest=rest)
           for i, (_, rest) in enumerate(rest_stream(oversized, "application/octet-stream"))]
    status, body = await rest_error(env.components().UploadComponent(iter(raw),
                                                                      metadata=rest_md()))
    assert status == 403 and "limit" in body["error"]
    assert env.blobs() == blobs_before
    assert list(env.spool_dir.iterdir()) == []


async def test_interrupted_upload_leaves_no_version_blob_or_spool_file(env: Env) -> None:
    created = await create_cart(env)
    blobs_before = env.blobs()
    wasm = env.wasm("update-test-v1.wasm")
    sent = asyncio.Event()

    async def half_then_hang() -> AsyncIterator[pb.UploadComponentRequest]:
        yield pb.UploadComponentRequest(component_id=created.component_id)
        for piece in list(chunks(wasm))[:4]:
            yield pb.UploadComponentRequest(chunk=piece)
        sent.set()
        await asyncio.sleep(3600)

    call = env.components().UploadComponent(half_then_hang(), metadata=grpc_md())
    await sent.wait()
    # The server is spooling the upload (so the cancellation really interrupts it).
    assert await eventually(lambda: len(list(env.spool_dir.iterdir())) == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The server notices the cancellation and deletes the partial spool file.
    assert await eventually(lambda: not list(env.spool_dir.iterdir()))
    versions = await env.components().GetComponentVersions(
        pb.GetComponentVersionsRequest(component_id=created.component_id), metadata=grpc_md()
    )
    assert [v.version for v in versions.components] == [0]
    assert env.blobs() == blobs_before
    assert list(env.spool_dir.iterdir()) == []


async def test_concurrent_uploads_get_distinct_consecutive_versions(env: Env) -> None:
    created = await create_cart(env)
    wasm = env.wasm("rust-echo.wasm")

    async def upload() -> int:
        messages = [pb.UploadComponentRequest(component_id=created.component_id)]
        messages += [pb.UploadComponentRequest(chunk=c) for c in chunks(wasm)]
        reply = await env.components().UploadComponent(iter(messages), metadata=grpc_md())
        return reply.component.version

    versions = await asyncio.gather(*(upload() for _ in range(8)))
    assert sorted(versions) == list(range(1, 9))
    for version in range(1, 9):
        assert await download(env, created.component_id, version) == wasm


async def test_list_filters_by_project_and_name(env: Env) -> None:
    cart = await create_cart(env)
    echo = (await env.components().CreateComponent(
        iter(native_create("echo", env.wasm("rust-echo.wasm"))), metadata=grpc_md()
    )).component
    other = await env.project_of(ALICE, "elsewhere")
    await create_cart(env, project_id=other)
    listed = await env.components().ListComponents(pb.ListComponentsRequest(), metadata=grpc_md())
    assert [c.component_id for c in listed.components] == [cart.component_id, echo.component_id]
    named = await env.components().ListComponents(
        pb.ListComponentsRequest(component_name="echo"), metadata=grpc_md()
    )
    assert [c.component_id for c in named.components] == [echo.component_id]
    in_other = await env.components().ListComponents(
        pb.ListComponentsRequest(project_id=other), metadata=rest_md()
    )
    assert [c["componentName"] for c in json.loads(in_other.rest.data)] == ["shopping-cart"]
    none = await env.components().ListComponents(
        pb.ListComponentsRequest(component_name="missing"), metadata=rest_md()
    )
    assert none.rest.data == b"[]"


async def test_versions_path_errors_and_not_found(env: Env) -> None:
    created = await create_cart(env)
    stub = env.components()
    assert await rest_error(stub.GetComponentVersion(
        pb.GetComponentVersionRequest(component_id=created.component_id, version="x1"),
        metadata=rest_md(),
    )) == (400, {"errors": ["Invalid version"]})
    assert await rest_error(stub.GetComponentVersion(
        pb.GetComponentVersionRequest(component_id=created.component_id, version="7"),
        metadata=rest_md(),
    )) == (404, {"error": "Component not found"})
    assert await rest_error(stub.GetLatestComponent(
        pb.GetLatestComponentRequest(component_id=str(uuid.uuid4())), metadata=rest_md(),
    )) == (404, {"error": "Component not found"})
    status, body = await rest_error(stub.GetLatestComponent(
        pb.GetLatestComponentRequest(component_id="not-a-uuid"), metadata=rest_md(),
    ))
    assert status == 400 and "not a UUID" in body["errors"][0]
    status, _ = await rest_error(stub.DownloadComponent(
        pb.DownloadComponentRequest(component_id=created.component_id, version=5),
        metadata=rest_md(),
    ).read())
    assert status == 404


async def test_only_the_projects_owner_gets_access(env: Env) -> None:
    created = await create_cart(env)
    status, body = await rest_error(env.components().GetLatestComponent(
        pb.GetLatestComponentRequest(component_id=created.component_id), metadata=rest_md(BOB),
    ))
    assert status == 401
    assert body == {
        "error": f"Action `ViewComponent` is not allowed on project `{created.project_id}`"
    }
    upload = [pb.UploadComponentRequest(component_id=created.component_id)]
    upload += [pb.UploadComponentRequest(chunk=c) for c in chunks(env.wasm("rust-echo.wasm"))]
    status, _ = await rest_error(env.components().UploadComponent(iter(upload),
                                                                  metadata=grpc_md(BOB)))
    assert status == 401
    # An admin may.
    admin = Principal("root", roles=("Admin",))
    reply = await env.components().GetLatestComponent(
        pb.GetLatestComponentRequest(component_id=created.component_id), metadata=grpc_md(admin)
    )
    assert reply.component.component_id == created.component_id


async def register_plugin(env: Env, owner: Principal, name: str, version: str,
                          scope: dict[str, str] | None = None) -> None:
    definition = {"name": name, "version": version, "description": "d", "icon": [],
                  "homepage": "h", "scope": scope or {"type": "Global"},
                  "specs": {"type": "ComponentTransformer", "validateUrl": "v",
                            "transformUrl": "t"}}
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{env.project.port}")
    async with channel:
        await plugin_grpc.PluginServiceStub(channel).CreatePlugin(
            plugin_pb.CreatePluginRequest(rest=httpbody_pb2.HttpBody(
                content_type="application/json", data=json.dumps(definition).encode())),
            metadata=rest_md(owner),
        )


async def test_installations_refer_to_plugins_the_owner_registered(env: Env) -> None:
    created = await create_cart(env)
    stub = env.components()

    def install(name: str) -> Any:
        return rest_error(stub.InstallPlugin(pb.InstallPluginRequest(
            component_id=created.component_id, name=name, version="1", priority=1),
            metadata=rest_md()))

    assert await install("unknown") == (404, {"error": "Plugin not found: unknown@1"})
    await register_plugin(env, BOB, "bobs", "1")  # another account's plugin is not the owner's
    assert await install("bobs") == (404, {"error": "Plugin not found: bobs@1"})
    other = str(uuid.uuid4())
    await register_plugin(env, ALICE, "elsewhere", "1", {"type": "Component", "componentId": other})
    assert await install("elsewhere") == (401, {
        "error": f"Plugin elsewhere@1 not available for component {created.component_id}"})
    await register_plugin(env, ALICE, "here", "1",
                          {"type": "Component", "componentId": created.component_id})
    installed = await stub.InstallPlugin(pb.InstallPluginRequest(
        component_id=created.component_id, name="here", version="1", priority=1),
        metadata=rest_md())
    assert json.loads(installed.rest.data)["name"] == "here"


async def test_plugin_changes_each_create_a_version(env: Env) -> None:
    created = await create_cart(env)
    stub = env.components()
    await register_plugin(env, ALICE, "otlp", "1.0")
    installed = await stub.InstallPlugin(
        pb.InstallPluginRequest(component_id=created.component_id, name="otlp", version="1.0",
                                priority=5, parameters={"endpoint": "x"}),
        metadata=rest_md(),
    )
    installation = json.loads(installed.rest.data)
    assert installation == {"id": installation["id"], "name": "otlp", "version": "1.0",
                            "priority": 5, "parameters": {"endpoint": "x"}}
    updated = await stub.UpdatePluginInstallation(
        pb.UpdatePluginInstallationRequest(component_id=created.component_id,
                                           installation_id=installation["id"], priority=9,
                                           parameters={"endpoint": "y"}),
        metadata=rest_md(),
    )
    assert updated.rest.data == b"{}"
    per_version = []
    for version in ("0", "1", "2", "latest"):
        reply = await stub.ListInstalledPlugins(
            pb.ListInstalledPluginsRequest(component_id=created.component_id, version=version),
            metadata=rest_md(),
        )
        per_version.append([(p["priority"], p["parameters"]) for p in json.loads(reply.rest.data)])
    assert per_version == [[], [(5, {"endpoint": "x"})], [(9, {"endpoint": "y"})],
                           [(9, {"endpoint": "y"})]]
    removed = await stub.UninstallPlugin(
        pb.UninstallPluginRequest(component_id=created.component_id,
                                  installation_id=installation["id"]),
        metadata=rest_md(),
    )
    assert removed.rest.data == b"{}"
    latest = await stub.GetLatestComponent(
        pb.GetLatestComponentRequest(component_id=created.component_id), metadata=grpc_md()
    )
    assert (latest.component.version, list(latest.component.installed_plugins)) == (3, [])
    # The binary is shared, not copied, and still downloads for every version.
    assert await download(env, created.component_id, 3) == env.wasm("wasmast_shopping-cart.wasm")
    assert await rest_error(stub.UninstallPlugin(
        pb.UninstallPluginRequest(component_id=created.component_id,
                                  installation_id=installation["id"]),
        metadata=rest_md(),
    )) == (404, {"error": f"Plugin installation not found: {installation['id']}"})
    status, body = await rest_error(stub.InstallPlugin(
        pb.InstallPluginRequest(component_id=created.component_id, name=""), metadata=rest_md(),
    ))
    assert status == 400
    assert body["errors"] == ["Missing field: version", "Missing field: priority",
                              "Plugin name must not be empty"]


async def test_events_are_published_for_creation_and_new_versions(env: Env) -> None:
    pubsub = env.redis.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    created = await create_cart(env)
    upload = [pb.UploadComponentRequest(component_id=created.component_id)]
    upload += [pb.UploadComponentRequest(chunk=c) for c in chunks(env.wasm("rust-echo.wasm"))]
    await env.components().UploadComponent(iter(upload), metadata=grpc_md())
    events: list[dict[str, Any]] = []
    while len(events) < 2:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None, "expected two events"
        events.append(json.loads(message["data"]))
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert [(e["type"], e["reason"], e["version"]) for e in events] == [
        ("ComponentCreated", "create", 0), ("ComponentVersionCreated", "upload", 1)
    ]
    assert {e["componentId"] for e in events} == {created.component_id}


async def test_bad_initial_files_are_400(env: Env) -> None:
    wasm = env.wasm("rust-echo.wasm")
    status, body = await rest_error(env.components().CreateComponent(
        iter(native_create("e1", wasm, files=b"this is not a zip")), metadata=grpc_md()
    ))
    assert status == 400 and body["errors"][0].startswith("Malformed component archive error: ")
    status, body = await rest_error(env.components().CreateComponent(
        iter(native_create("e2", wasm, files=zip_of({"a": b"1"}),
                           permissions=[("/missing", pb.FILE_PERMISSIONS_READ_WRITE)])),
        metadata=grpc_md(),
    ))
    assert status == 400 and "/missing" in body["errors"][0]
    assert env.blobs() == []


async def test_template_api_shapes(env: Env) -> None:
    wasm = env.wasm("wasmast_shopping-cart.wasm")
    body = multipart([
        ("field0", b'{"componentName":"tpl"}', None),
        ("template", wasm, "tpl.wasm"),
    ])
    reply = await env.templates().CreateTemplate(
        iter(create_rest_requests(body)), metadata=rest_md()
    )
    document = json.loads(reply.rest.data)
    template_id = document["versionedTemplateId"]["rawTemplateId"]
    versioned = {"rawTemplateId": template_id, "version": 0}
    assert document["userTemplateId"] == {"versionedComponentId": versioned}
    assert document["protectedTemplateId"] == {"versionedComponentId": versioned}
    assert document["templateName"] == {"value": "tpl"}
    assert document["templateSize"] == len(wasm)
    assert list(document["metadata"]) == ["exports", "producers"]
    assert list(document["metadata"]["exports"][0]) == ["Instance"]
    latest = await env.templates().GetLatestTemplateVersion(
        pb.GetLatestComponentRequest(component_id=template_id), metadata=rest_md()
    )
    assert latest.rest.data == b"0"
    # The same data through the Component API.
    component = await env.components().GetLatestComponent(
        pb.GetLatestComponentRequest(component_id=template_id), metadata=grpc_md()
    )
    assert component.component.component_name == "tpl"
    assert await rest_error(env.templates().GetLatestTemplateVersion(
        pb.GetLatestComponentRequest(component_id=str(uuid.uuid4())), metadata=rest_md()
    )) == (404, {"message": "Component not found"})
    assert await rest_error(env.templates().CreateTemplate(
        iter(create_rest_requests(body)), metadata=rest_md()
    )) == (409, {"component_id": template_id})
    listed = await env.templates().ListTemplates(
        template_pb.ListTemplatesRequest(template_name="tpl"), metadata=rest_md()
    )
    assert [t["templateName"]["value"] for t in json.loads(listed.rest.data)] == ["tpl"]


# -- metadata of every fixture, read back through the API ----------------------------------
# wasmast_* binaries: stored exports, memories and producers equal Golem's expectations
# (exports-json-2024-12) plus the [drop] functions Golem's REST layer adds; every other valid
# binary: exported interfaces and functions agree with `wasm-tools component wit`.

EXPECTED_2024 = "golem/expected/exports-json-2024-12"
WIT = "golem/expected/wasm-tools-wit"


def fixtures(shared: Path, *, prefix: str | None = None) -> list[str]:
    names = sorted(p.name for p in (shared / "golem" / "wasm").glob("*.wasm"))
    valid = [n for n in names if not n.startswith("negative_")]
    if prefix is None:
        return valid
    return [n for n in valid if n.startswith(prefix)]


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
WASMAST = fixtures(SHARED, prefix="wasmast_") if SHARED.is_dir() else []
ALL_VALID = fixtures(SHARED) if SHARED.is_dir() else []


def with_drops(exports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Golem's REST shape (`add_resource_drops`): `[drop]<r>(self: own<r>)` per constructor,
    after an instance's functions, and after all exports for top-level constructors."""

    def drops(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "name": "[drop]" + f["name"].removeprefix("[constructor]"),
                "parameters": [{"name": "self", "typ": f["results"][0]["typ"]}],
                "results": [],
            }
            for f in items
            if f["name"].startswith("[constructor]")
        ]

    result: list[dict[str, Any]] = []
    top_level: list[dict[str, Any]] = []
    for export in exports:
        if export["type"] == "Instance":
            functions = export["functions"]
            result.append({**export, "functions": functions + drops(functions)})
        else:
            result.append(export)
            top_level.append({k: v for k, v in export.items() if k != "type"})
    result.extend({"type": "Function", **d} for d in drops(top_level))
    return result


async def stored_metadata(env: Env, fixture: str) -> dict[str, Any]:
    body = multipart([
        ("query", json.dumps({"componentName": fixture}).encode(), None),
        ("component", env.wasm(fixture), fixture),
    ])
    created = await env.components().CreateComponent(
        iter(create_rest_requests(body)), metadata=rest_md()
    )
    component_id = json.loads(created.rest.data)["versionedComponentId"]["componentId"]
    latest = await env.components().GetLatestComponent(
        pb.GetLatestComponentRequest(component_id=component_id), metadata=rest_md()
    )
    metadata: dict[str, Any] = json.loads(latest.rest.data)["metadata"]
    return metadata


@pytest.mark.parametrize("fixture", WASMAST)
async def test_wasmast_metadata_equals_golems_expectations(
    env: Env, shared_fixtures: Path, fixture: str
) -> None:
    metadata = await stored_metadata(env, fixture)
    stem = fixture.removeprefix("wasmast_").removesuffix(".wasm")
    expected_dir = shared_fixtures / EXPECTED_2024
    exports_file = expected_dir / f"{stem}.exports.json"
    if exports_file.exists():
        assert metadata["exports"] == with_drops(json.loads(exports_file.read_text()))
    else:
        # wasmast_caller has no 2024 expectation: its world-level functions must still be there.
        assert [e["type"] for e in metadata["exports"]] == ["Function"] * len(metadata["exports"])
        assert metadata["exports"]
    for part in ("memories", "producers"):
        expected_file = expected_dir / f"{stem}.{part}.json"
        if expected_file.exists():
            assert metadata[part] == json.loads(expected_file.read_text())


def wit_world_exports(text: str) -> set[str]:
    world = text.split("world ", 1)[1].split("\n}", 1)[0]
    return {
        m.group(1) for m in re.finditer(r"^\s*export (\S+?)(?:;|: )", world, re.MULTILINE)
    }


def wit_function_present(text: str, name: str) -> bool:
    """Whether the WIT declares the function a component-model export name refers to."""
    if name.startswith("[constructor]"):
        return "constructor(" in text
    plain = re.sub(r"^\[(method|static)\][^.]+\.", "", name)
    return re.search(rf"(^|\s){re.escape(plain)}: (static )?func", text, re.MULTILINE) is not None


@pytest.mark.parametrize("fixture", ALL_VALID)
async def test_exports_agree_with_wasm_tools_wit(
    env: Env, shared_fixtures: Path, fixture: str
) -> None:
    metadata = await stored_metadata(env, fixture)
    wit = (shared_fixtures / WIT / fixture.replace(".wasm", ".wit")).read_text()
    assert {e["name"] for e in metadata["exports"]} == wit_world_exports(wit)
    functions = [
        f["name"]
        for e in metadata["exports"]
        for f in (e["functions"] if e["type"] == "Instance" else [e])
        if not f["name"].startswith("[drop]")
    ]
    assert functions, "every fixture exports at least one function"
    missing = [name for name in functions if not wit_function_present(wit, name)]
    assert missing == []


@pytest.mark.parametrize(
    "fixture", ["negative_core-module_moonbit-release.wasm",
                "negative_old-component-encoding-0x0c.wasm"]
)
async def test_negative_fixtures_are_rejected_through_rest(env: Env, fixture: str) -> None:
    body = multipart([
        ("query", b'{"componentName":"negative"}', None),
        ("component", env.wasm(fixture), fixture),
    ])
    status, error = await rest_error(env.components().CreateComponent(
        iter(create_rest_requests(body)), metadata=rest_md()
    ))
    assert status == 400 and error["errors"][0].startswith("Parsing error: ")
    listed = await env.components().ListComponents(pb.ListComponentsRequest(), metadata=rest_md())
    assert listed.rest.data == b"[]"
    assert env.blobs() == []


# -- failures after the blob was stored, and the S3 adapter ----------------------------------


class FailingStore(ComponentStore):
    """Redis that fails the next commit, as a crash or lost connection would."""

    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__(redis)
        self.fail_next = False

    def arm(self) -> None:
        self.fail_next = True

    def _maybe_fail(self) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("Redis went away")

    async def create(
        self, first: ComponentVersion, *, reason: str = "create", reservation: str = ""
    ) -> str | None:
        self._maybe_fail()
        return await super().create(first, reason=reason, reservation=reservation)

    async def add_version(
        self, version: ComponentVersion, *, reason: str, reservation: str = ""
    ) -> None:
        self._maybe_fail()
        await super().add_version(version, reason=reason, reservation=reservation)


async def exercise_failed_commits(env: Env, store: FailingStore, stored: Any) -> None:
    """A commit that fails after the WASM blob was written leaves no version and no blob."""
    created = await create_cart(env, files=zip_of({"f": b"1"}))
    before = stored()
    store.arm()
    status, body = await rest_error(env.components().CreateComponent(
        iter(native_create("other", env.wasm("rust-echo.wasm"))), metadata=grpc_md()
    ))
    assert (status, body) == (500, {"error": "Internal server error"})
    store.arm()
    upload = [pb.UploadComponentRequest(component_id=created.component_id)]
    upload += [pb.UploadComponentRequest(chunk=c) for c in chunks(env.wasm("rust-echo.wasm"))]
    status, _ = await rest_error(env.components().UploadComponent(iter(upload),
                                                                  metadata=grpc_md()))
    assert status == 500
    assert stored() == before
    listed = await env.components().ListComponents(pb.ListComponentsRequest(), metadata=grpc_md())
    assert [(c.component_name, c.version) for c in listed.components] == [("shopping-cart", 0)]
    # The next upload works and gets the next version number.
    reply = await env.components().UploadComponent(iter(upload), metadata=grpc_md())
    assert reply.component.version == 1
    assert await download(env, created.component_id, 1) == env.wasm("rust-echo.wasm")
    assert await download(env, created.component_id, 0) == env.wasm(
        "wasmast_shopping-cart.wasm"
    )


async def test_failed_commit_removes_the_stored_blob_on_disk(
    redis: aioredis.Redis, tmp_path: Path, shared_fixtures: Path
) -> None:
    store = FailingStore(redis)
    blobs = DiskBlobStore(tmp_path / "blobs")
    async with running_env(redis, tmp_path, shared_fixtures, blobs, store) as env:
        await exercise_failed_commits(env, store, env.blobs)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on a free loopback port, stopped by PID afterwards."""
    from cairn.stack.launcher import free_port

    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    endpoint = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{endpoint}/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start: {log_path.read_text()}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


async def test_s3_blob_store_create_upload_download_and_failures(
    redis: aioredis.Redis, tmp_path: Path, shared_fixtures: Path, s3_endpoint: str
) -> None:
    client = make_minio_client(s3_endpoint, "testing", "testing", retries=0)
    bucket = f"components-{uuid.uuid4().hex[:12]}"
    blobs = S3BlobStore(client, bucket)

    def stored() -> list[str]:
        """Every object in the bucket, staging objects included, and unfinished uploads."""
        if not client.bucket_exists(bucket):
            return []
        names = sorted(o.object_name or "" for o in client.list_objects(bucket, recursive=True))
        boto = boto3.client(
            "s3", endpoint_url=f"http://{s3_endpoint}", aws_access_key_id="testing",
            aws_secret_access_key="testing", region_name="us-east-1",
        )
        pending = boto.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return names + [f"pending:{u['Key']}" for u in pending]

    store = FailingStore(redis)
    async with running_env(redis, tmp_path, shared_fixtures, blobs, store) as env:
        await exercise_failed_commits(env, store, stored)
        listed = await env.components().ListComponents(pb.ListComponentsRequest(),
                                                       metadata=grpc_md())
        component_id = listed.components[0].component_id
        names = stored()
        assert len([n for n in names if n.startswith(f"components/{component_id}/")]) == 2
        assert f"initial-files/{hashlib.sha256(b'1').hexdigest()}" in names
        # Invalid and oversized uploads store nothing in the bucket either.
        bad = [pb.UploadComponentRequest(component_id=component_id)]
        bad += [pb.UploadComponentRequest(chunk=c) for c in
                chunks(env.wasm("negative_core-module_moonbit-release.wasm"))]
        assert (await rest_error(env.components().UploadComponent(
            iter(bad), metadata=grpc_md())))[0] == 400
        big = [pb.UploadComponentRequest(component_id=component_id)]
        big += [pb.UploadComponentRequest(chunk=c) for c in
                chunks(env.wasm("wasmast_shopping-cart.wasm") * 8)]
        assert (await rest_error(env.components().UploadComponent(
            iter(big), metadata=grpc_md())))[0] == 403
        assert stored() == names


async def test_rest_create_accepts_the_open_source_name_part(env: Env) -> None:
    body = multipart([("name", b"oss-style", None),
                      ("component", env.wasm("rust-echo.wasm"), "e.wasm")])
    reply = await env.components().CreateComponent(
        iter(create_rest_requests(body)), metadata=rest_md()
    )
    assert json.loads(reply.rest.data)["componentName"] == "oss-style"
