"""The Component API through Envoy: the documented paths, exact JSON, streamed uploads and
downloads, plugin installation paths, and the documented errors."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis.asyncio as aioredis

from cairn.auth.store import FAR_FUTURE, Account, AuthStore
from cairn.component.v1 import component_service_pb2 as pb
from cairn.component.v1 import component_service_pb2_grpc as pb_grpc
from cairn.component.wasm import analyse_component, metadata_to_json

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e

CART = "wasmast_shopping-cart.wasm"


@pytest.fixture
def root(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.base_url,
        headers={"Authorization": f"Bearer {stack.root_token}"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture
def wasm_dir(shared_fixtures: Path) -> Path:
    return shared_fixtures / "golem" / "wasm"


def new_project(client: httpx.Client) -> str:
    """A fresh project, so listings in one test do not see another test's components."""
    response = client.post("/v1/projects", json={
        "name": f"p-{uuid.uuid4().hex[:8]}", "ownerAccountId": "root", "description": "e2e",
    })
    assert response.status_code == 200, response.text
    return str(response.json()["projectId"])


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def create(
    client: httpx.Client, name: str, wasm: bytes, *, project_id: str | None = None,
    extra: dict[str, Any] | None = None, files: dict[str, Any] | None = None,
) -> httpx.Response:
    query: dict[str, str] = {"componentName": name}
    if project_id is not None:
        query["projectId"] = project_id
    return client.post(
        "/v1/components",
        data={"query": json.dumps(query), **(extra or {})},
        files={"component": ("c.wasm", wasm, "application/octet-stream"), **(files or {})},
    )


def assert_json(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    for leaked in ("grpc-status", "grpc-message", "x-http-body", "x-http-status"):
        assert leaked not in response.headers
    return response.json()


def test_create_list_versions_upload_download_latest(
    root: httpx.Client, wasm_dir: Path
) -> None:
    project = new_project(root)
    cart = (wasm_dir / CART).read_bytes()
    config, readme = b'{"currency":"EUR"}', b"read me"
    response = create(
        root, "shopping-cart", cart, project_id=project,
        extra={"filesPermissions": json.dumps(
            {"values": [{"path": "/etc/config.json", "permissions": "read-write"}]}
        )},
        files={"files": ("files.zip", zip_of({"etc/config.json": config, "README": readme}),
                         "application/zip")},
    )
    created = assert_json(response)
    component_id = created["versionedComponentId"]["componentId"]
    expected_v0 = {
        "versionedComponentId": {"componentId": component_id, "version": 0},
        "componentName": "shopping-cart",
        "componentSize": len(cart),
        "metadata": metadata_to_json(analyse_component(cart)),
        "projectId": project,
        "createdAt": created["createdAt"],
        "componentType": "Durable",
        "files": [
            {"key": hashlib.sha256(config).hexdigest(), "path": "/etc/config.json",
             "permissions": "read-write"},
            {"key": hashlib.sha256(readme).hexdigest(), "path": "/README",
             "permissions": "read-only"},
        ],
        "installedPlugins": [],
    }
    assert response.text == exact(expected_v0)

    echo = (wasm_dir / "rust-echo.wasm").read_bytes()
    other = assert_json(create(root, "echo", echo, project_id=project))
    listed = assert_json(root.get("/v1/components", params={"project-id": project}))
    assert [c["componentName"] for c in listed] == ["shopping-cart", "echo"]
    named = assert_json(root.get("/v1/components",
                                 params={"project-id": project, "component-name": "echo"}))
    assert named == [other]

    # A raw-body upload with ?component_type=, then a multipart update.
    v1_wasm = (wasm_dir / "update-test-v1.wasm").read_bytes()
    v1 = assert_json(root.put(
        f"/v1/components/{component_id}/upload", params={"component_type": "Ephemeral"},
        content=v1_wasm, headers={"Content-Type": "application/octet-stream"},
    ))
    assert v1["versionedComponentId"] == {"componentId": component_id, "version": 1}
    assert (v1["componentType"], v1["componentSize"]) == ("Ephemeral", len(v1_wasm))
    assert v1["files"] == expected_v0["files"]
    v2_wasm = (wasm_dir / "update-test-v2.wasm").read_bytes()
    v2 = assert_json(root.post(
        f"/v1/components/{component_id}/updates",
        files={"component": ("v2.wasm", v2_wasm, "application/octet-stream")},
    ))
    assert (v2["versionedComponentId"]["version"], v2["componentType"]) == (2, "Ephemeral")

    versions = assert_json(root.get(f"/v1/components/{component_id}"))
    assert [v["versionedComponentId"]["version"] for v in versions] == [0, 1, 2]
    assert versions[0] == expected_v0
    for version, wasm in enumerate([cart, v1_wasm, v2_wasm]):
        download = root.get(f"/v1/components/{component_id}/download",
                            params={"version": version})
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/octet-stream"
        assert download.content == wasm
        # What the bytes must add up to, since a failure mid-stream cannot change the 200.
        assert download.headers["x-cairn-component-sha256"] == hashlib.sha256(wasm).hexdigest()
        assert download.headers["x-cairn-component-size"] == str(len(wasm))
        assert download.headers["x-cairn-component-version"] == str(version)
        one = assert_json(root.get(f"/v1/components/{component_id}/versions/{version}"))
        assert one == versions[version]
    assert root.get(f"/v1/components/{component_id}/download").content == v2_wasm
    assert assert_json(root.get(f"/v1/components/{component_id}/latest")) == versions[2]


def test_missing_project_id_means_the_default_project(root: httpx.Client, wasm_dir: Path) -> None:
    default = assert_json(root.get("/v1/projects/default"))["projectId"]
    name = f"default-{uuid.uuid4().hex[:8]}"
    created = assert_json(create(root, name, (wasm_dir / "rust-echo.wasm").read_bytes()))
    assert created["projectId"] == default
    listed = assert_json(root.get("/v1/components", params={"component-name": name}))
    assert [c["projectId"] for c in listed] == [default]


def test_plugin_installation_paths(root: httpx.Client, wasm_dir: Path) -> None:
    project = new_project(root)
    created = assert_json(create(root, "plugged", (wasm_dir / CART).read_bytes(),
                                 project_id=project))
    base = f"/v1/components/{created['versionedComponentId']['componentId']}"
    assert_json(root.post("/v1/plugins", json={
        "name": "otlp-exporter", "version": "0.1.0", "description": "OTLP", "icon": [1, 2],
        "homepage": "https://example.com", "scope": {"type": "Project", "projectId": project},
        "specs": {"type": "OplogProcessor", "componentId": str(uuid.uuid4()),
                  "componentVersion": 0}}))
    installation = assert_json(root.post(f"{base}/latest/plugins/installs", json={
        "name": "otlp-exporter", "version": "0.1.0", "priority": 7,
        "parameters": {"endpoint": "http://collector"},
    }))
    assert installation == {
        "id": installation["id"], "name": "otlp-exporter", "version": "0.1.0", "priority": 7,
        "parameters": {"endpoint": "http://collector"},
    }
    assert uuid.UUID(installation["id"])
    assert assert_json(root.get(f"{base}/latest"))["installedPlugins"] == [installation]
    assert assert_json(root.get(f"{base}/versions/0/plugins/installs")) == []
    assert assert_json(root.get(f"{base}/versions/1/plugins/installs")) == [installation]

    updated = root.put(f"{base}/versions/latest/plugins/installs/{installation['id']}",
                       json={"priority": 9, "parameters": {"endpoint": "http://other"}})
    assert assert_json(updated) == {} and updated.text == "{}"
    assert assert_json(root.get(f"{base}/versions/2/plugins/installs")) == [
        {**installation, "priority": 9, "parameters": {"endpoint": "http://other"}}
    ]
    removed = root.delete(f"{base}/latest/plugins/installs/{installation['id']}")
    assert removed.text == "{}"
    latest = assert_json(root.get(f"{base}/latest"))
    assert (latest["versionedComponentId"]["version"], latest["installedPlugins"]) == (3, [])
    # Plugin changes keep the binary.
    assert root.get(f"{base}/download").content == (wasm_dir / CART).read_bytes()
    missing = root.delete(f"{base}/latest/plugins/installs/{installation['id']}")
    assert assert_json(missing, 404) == {
        "error": f"Plugin installation not found: {installation['id']}"
    }


@pytest.mark.parametrize(
    "fixture", ["negative_core-module_moonbit-release.wasm",
                "negative_old-component-encoding-0x0c.wasm"]
)
def test_negative_fixtures_are_400_and_create_nothing(
    root: httpx.Client, wasm_dir: Path, fixture: str
) -> None:
    project = new_project(root)
    response = create(root, "negative", (wasm_dir / fixture).read_bytes(), project_id=project)
    body = assert_json(response, 400)
    assert list(body) == ["errors"] and len(body["errors"]) == 1
    assert body["errors"][0].startswith("Parsing error: ")
    assert assert_json(root.get("/v1/components", params={"project-id": project})) == []


def test_documented_errors(stack: RunningStack, root: httpx.Client, wasm_dir: Path) -> None:
    project = new_project(root)
    echo = (wasm_dir / "rust-echo.wasm").read_bytes()
    first = assert_json(create(root, "dup", echo, project_id=project))
    component_id = first["versionedComponentId"]["componentId"]
    assert assert_json(create(root, "dup", echo, project_id=project), 409) == {
        "error": f"Component already exists: {component_id}"
    }
    assert assert_json(root.get(f"/v1/components/{component_id}/versions/one"), 400) == {
        "errors": ["Invalid version"]
    }
    assert assert_json(root.get(f"/v1/components/{component_id}/versions/5"), 404) == {
        "error": "Component not found"
    }
    assert assert_json(root.get(f"/v1/components/{uuid.uuid4()}/latest"), 404) == {
        "error": "Component not found"
    }
    missing = root.get(f"/v1/components/{component_id}/download", params={"version": 9})
    assert assert_json(missing, 404) == {"error": "Component not found"}
    unauthorized = httpx.get(f"{stack.base_url}/v1/components/{component_id}/latest")
    assert assert_json(unauthorized, 401) == {"error": "Unauthorized"}
    no_component = root.post("/v1/components", data={"query": '{"componentName":"x"}'},
                             files={"other": ("o", b"o")})
    assert assert_json(no_component, 400) == {
        "errors": ["Missing required form field(s): component"]
    }
    bad_zip = create(root, "badzip", echo, project_id=project,
                     files={"files": ("f.zip", b"not a zip", "application/zip")})
    assert assert_json(bad_zip, 400)["errors"][0].startswith("Malformed component archive error")
    bad_type = create(root, "badtype", echo, project_id=project,
                      extra={"componentType": "Forever"})
    assert assert_json(bad_type, 400) == {
        "errors": ["Invalid componentType 'Forever': expected Durable or Ephemeral"]
    }


def test_over_the_size_limit_is_403(root: httpx.Client) -> None:
    project = new_project(root)
    oversized = b"\0asm\x0d\x00\x01\x00" + b"\0" * 50_000_000
    response = create(root, "big", oversized, project_id=project)
    assert assert_json(response, 403) == {
        "error": "Limit exceeded: Limit Exceeded: Component size limit exceeded (limit: 50MB)"
    }
    assert assert_json(root.get("/v1/components", params={"project-id": project})) == []


async def test_native_grpc_through_envoy(stack: RunningStack, wasm_dir: Path) -> None:
    cart = (wasm_dir / CART).read_bytes()
    metadata = (("authorization", f"Bearer {stack.root_token}"),)
    name = f"grpc-{uuid.uuid4().hex[:8]}"

    def messages() -> Iterator[pb.CreateComponentRequest]:
        yield pb.CreateComponentRequest(header=pb.CreateComponentHeader(component_name=name))
        for start in range(0, len(cart), 1 << 20):
            yield pb.CreateComponentRequest(component_chunk=cart[start:start + (1 << 20)])

    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.ComponentServiceStub(channel)
        created = (await stub.CreateComponent(messages(), metadata=metadata)).component
        assert (created.component_name, created.version) == (name, 0)
        assert created.metadata.exports[0].instance.name == "golem:it/api"
        downloaded = b"".join([
            m.data async for m in stub.DownloadComponent(
                pb.DownloadComponentRequest(component_id=created.component_id),
                metadata=metadata,
            )
        ])
        assert downloaded == cart
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateComponent(messages(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.fixture
async def fresh_account_secret(stack: RunningStack) -> str:
    """A token secret of a new account on the default plan, seeded into the stack's Redis."""
    redis = aioredis.Redis.from_url(stack.redis_url)
    store = AuthStore(redis)
    account_id, secret = str(uuid.uuid4()), str(uuid.uuid4())
    await store.put_account(Account(account_id, "limited", "limited@example.com"))
    await store.add_token(account_id, secret, FAR_FUTURE)
    await redis.aclose()
    return secret


def test_plan_component_limit_counts_creates_not_versions(
    stack: RunningStack, wasm_dir: Path, fresh_account_secret: str
) -> None:
    """The default plan allows 100 components per account; new versions do not count."""
    secret = fresh_account_secret
    echo = (wasm_dir / "rust-echo.wasm").read_bytes()
    with httpx.Client(base_url=stack.base_url, timeout=60,
                      headers={"Authorization": f"Bearer {secret}"}) as client:
        first = assert_json(create(client, "c0", echo))
        component_id = first["versionedComponentId"]["componentId"]
        for version in (1, 2):
            uploaded = assert_json(client.put(
                f"/v1/components/{component_id}/upload", content=echo,
                headers={"Content-Type": "application/octet-stream"},
            ))
            assert uploaded["versionedComponentId"]["version"] == version
        for index in range(1, 100):
            assert_json(create(client, f"c{index}", echo))
        refused = create(client, "c100", echo)
        assert assert_json(refused, 403) == {
            "error": "Limit exceeded: Limit Exceeded: Component limit exceeded (limit: 100)"
        }
        listed = assert_json(client.get("/v1/components"))
        assert len(listed) == 100
        assert "c100" not in {c["componentName"] for c in listed}


def test_upload_cut_short_through_envoy_leaves_nothing(
    stack: RunningStack, root: httpx.Client, wasm_dir: Path
) -> None:
    """A client that disconnects mid-body: no version, no blob, no temp file in the blob store."""
    project = new_project(root)
    created = assert_json(create(root, "cut", (wasm_dir / "rust-echo.wasm").read_bytes(),
                                 project_id=project))
    component_id = created["versionedComponentId"]["componentId"]
    blob_dir = stack.run_dir / "blobs" / "components" / component_id
    before = sorted(p.name for p in blob_dir.iterdir())
    wasm = (wasm_dir / "update-test-v1.wasm").read_bytes()
    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            f"PUT /v1/components/{component_id}/upload HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {stack.root_token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(wasm)}\r\n\r\n"
            .encode()
        )
        conn.sendall(wasm[: len(wasm) // 2])
        time.sleep(0.5)  # the first half reaches the service before the client goes away
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sorted(p.name for p in blob_dir.iterdir()) != before:
        time.sleep(0.1)
    assert sorted(p.name for p in blob_dir.iterdir()) == before
    versions = assert_json(root.get(f"/v1/components/{component_id}"))
    assert [v["versionedComponentId"]["version"] for v in versions] == [0]
    # The component still takes the next upload as version 1.
    uploaded = assert_json(root.put(f"/v1/components/{component_id}/upload", content=wasm,
                                    headers={"Content-Type": "application/octet-stream"}))
    assert uploaded["versionedComponentId"]["version"] == 1
