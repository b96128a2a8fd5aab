"""Plan limits end to end: a stack whose default plan is small, through Envoy and the real services.

The project limit is enforced by the project service (asking the auth service for the owner's
plan); component, storage and upload limits by the auth service's internal RecordComponentUsage,
which only Cairn services may call: directly on the auth port with a signed service assertion,
never through Envoy.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest

from cairn.auth.v1 import auth_service_pb2 as auth_pb
from cairn.auth.v1 import auth_service_pb2_grpc as auth_grpc
from cairn.runtime.callers import as_caller
from cairn.runtime.principal import Principal
from cairn.stack.launcher import Stack, free_port

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    run_dir = tmp_path_factory.mktemp("small-plan")
    http_port = free_port()
    ports = {name: free_port() for name in ("project", "component", "auth", "ledger")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")},
        "CAIRN_HTTP_PORT": str(http_port),
        "CAIRN_ENVOY_ADMIN_PORT": str(free_port()),
        **{f"CAIRN_{n.upper()}_GRPC_PORT": str(p) for n, p in ports.items()},
        "CAIRN_PLAN_PROJECT_LIMIT": "3",
        "CAIRN_PLAN_COMPONENT_LIMIT": "2",
        "CAIRN_PLAN_STORAGE_LIMIT": "5000000",
        "CAIRN_PLAN_MONTHLY_UPLOAD_LIMIT": "6000000",
        "CAIRN_LOG_LEVEL": "warning",
    }
    stack = Stack.prepare(env, run_dir, log_dir=run_dir / "logs").start()
    try:
        yield RunningStack(stack.children[0].process, stack.rest_url, f"127.0.0.1:{http_port}",
                           stack.root_token, stack.settings.redis_url, run_dir, ports)
    finally:
        stack.stop()


def new_account(stack: RunningStack, name: str) -> tuple[str, httpx.Client]:
    root = {"Authorization": f"Bearer {stack.root_token}"}
    made = httpx.post(f"{stack.base_url}/v1/accounts", headers=root,
                      json={"name": name, "email": f"{name}@example.com"})
    account_id = made.json()["id"]
    secret = httpx.post(f"{stack.base_url}/v1/accounts/{account_id}/tokens", headers=root,
                        json={}).json()["secret"]["value"]
    return account_id, httpx.Client(base_url=stack.base_url,
                                    headers={"Authorization": f"Bearer {secret}"})


def test_plan_shows_the_configured_limits(small_plan: RunningStack) -> None:
    account_id, client = new_account(small_plan, "planned")
    with client:
        plan = client.get(f"/v1/accounts/{account_id}/plan").json()
    assert plan["planData"] == {
        "projectLimit": 3, "componentLimit": 2, "workerLimit": 10000, "storageLimit": 5000000,
        "monthlyGasLimit": 1000000000000, "monthlyUploadLimit": 6000000,
    }


def test_project_limit_counts_the_default_project_and_holds_under_concurrency(
    small_plan: RunningStack,
) -> None:
    account_id, client = new_account(small_plan, "limited")

    def create(i: int) -> httpx.Response:
        return client.post("/v1/projects", json={
            "name": f"p{i}", "ownerAccountId": account_id, "description": "d"})

    with client, ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(create, range(8)))
        # The default project plus two more make three.
        assert sorted(r.status_code for r in replies) == [200, 200] + [403] * 6
        refused = next(r for r in replies if r.status_code == 403)
        assert refused.text == exact(
            {"error": "Limit Exceeded: Project limit exceeded (limit: 3)"}
        )
        assert len(client.get("/v1/projects").json()) == 3
        # Deleting one frees a place.
        victim = next(p for p in client.get("/v1/projects").json()
                      if p["projectData"]["projectType"] == "NonDefault")
        assert client.delete(f"/v1/projects/{victim['projectId']}").status_code == 200
        assert create(99).status_code == 200


def test_component_usage_limits_through_the_internal_rpc(small_plan: RunningStack) -> None:
    account_id, _ = new_account(small_plan, "uploader")
    secret = (small_plan.run_dir / "internal-secret").read_text().strip()
    service = as_caller(Principal(account_id), secret)
    with grpc.insecure_channel(f"127.0.0.1:{small_plan.grpc_ports['auth']}") as channel:
        auth = auth_grpc.AuthServiceStub(channel)

        def record(count: int, size: int) -> auth_pb.RecordComponentUsageResponse:
            return auth.RecordComponentUsage(auth_pb.RecordComponentUsageRequest(
                account_id=account_id, component_count_delta=count, storage_bytes_delta=size,
                upload_bytes=max(size, 0)), metadata=service)

        assert record(1, 2_000_000).usage.component_count == 1
        assert record(1, 2_000_000).usage.storage_bytes == 4_000_000
        with pytest.raises(grpc.RpcError) as err:
            record(1, 10)
        assert err.value.details() == (
            "Limit exceeded: Limit Exceeded: Component limit exceeded (limit: 2)"
        )
        with pytest.raises(grpc.RpcError) as err:
            record(0, 1_500_000)
        assert err.value.details() == (
            "Limit exceeded: Limit Exceeded: Storage limit exceeded for account: "
            f"{account_id} (limit: 5 MB)"
        )
        assert record(0, -3_000_000).usage.storage_bytes == 1_000_000
        with pytest.raises(grpc.RpcError) as err:
            record(0, 2_500_000)
        assert err.value.details() == (
            "Limit exceeded: Limit Exceeded: Upload limit exceeded for account: "
            f"{account_id} (limit: 6 MB)"
        )


def test_internal_rpcs_are_not_reachable_through_envoy(small_plan: RunningStack) -> None:
    with grpc.insecure_channel(small_plan.grpc_target) as channel:
        auth = auth_grpc.AuthServiceStub(channel)
        admin = (("authorization", f"Bearer {small_plan.root_token}"),)
        with pytest.raises(grpc.RpcError) as err:
            auth.RecordComponentUsage(
                auth_pb.RecordComponentUsageRequest(account_id="root", component_count_delta=1),
                metadata=admin,
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            auth.LookupAccount(auth_pb.LookupAccountRequest(account_id="root"), metadata=admin)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Authenticate stays available to gRPC clients through Envoy.
        reply = auth.Authenticate(auth_pb.AuthenticateRequest(token_secret=small_plan.root_token),
                                  metadata=admin)
        assert reply.principal.account_id == "root"
    uuid.UUID(small_plan.root_token)


def _files_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _usage(stack: RunningStack, account_id: str) -> auth_pb.ComponentUsage:
    """The account's counted usage, read through the internal RPC with zero deltas."""
    secret = (stack.run_dir / "internal-secret").read_text().strip()
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_ports['auth']}") as channel:
        reply = auth_grpc.AuthServiceStub(channel).RecordComponentUsage(
            auth_pb.RecordComponentUsageRequest(account_id=account_id),
            metadata=as_caller(Principal(account_id), secret),
        )
    return reply.usage


def test_initial_files_count_at_their_unpacked_size(
    small_plan: RunningStack, shared_fixtures: Path
) -> None:
    """A small zip that unpacks past the plan's storage is refused, nothing counted or stored;
    one that fits is counted at its unpacked size, not the zip's."""
    account_id, client = new_account(small_plan, "files-metered")
    wasm = (shared_fixtures / "golem" / "wasm" / "flags-service.wasm").read_bytes()
    pattern = bytes(range(256)) * 4096  # 1 MiB that deflates ~250x, within the ratio limit

    def create(name: str, files: bytes) -> httpx.Response:
        return client.post("/v1/components", files={
            "query": (None, json.dumps({"componentName": name}), "application/json"),
            "component": ("c.wasm", wasm, "application/wasm"),
            "files": ("files.zip", files, "application/zip"),
        })

    with client:
        too_big = _files_zip({f"f{i}": pattern for i in range(6)})  # 6 MiB unpacked
        assert len(too_big) < 100_000
        refused = create("too-big", too_big)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"].startswith("Limit exceeded: Limit Exceeded: Storage limit")
        usage = _usage(small_plan, account_id)
        assert (usage.component_count, usage.storage_bytes) == (0, 0)
        assert client.get("/v1/components").json() == []
        fits = create("fits", _files_zip({"data/a": pattern, "data/b": pattern}))
        assert fits.status_code == 200, fits.text
        usage = _usage(small_plan, account_id)
        assert usage.storage_bytes == len(wasm) + 2 * len(pattern)
        assert usage.monthly_upload_bytes == len(wasm) + 2 * len(pattern)
