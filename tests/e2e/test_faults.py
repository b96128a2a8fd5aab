"""Faults through the real stack: kill -9 of each part under mixed load, as `make run` runs it.

A stack of its own (the shared one must not see kills) serves ledger creates, component uploads
and reads from concurrent clients while Redis, each service and Envoy are killed in turn. The
supervisor must bring each back on its own; meanwhile every answer is a success or a clean 503 in
the API family's shape (a refused or reset connection only while Envoy itself is down); afterwards
every acknowledged write is there, no spool or blob temp file is left, and the plan's storage usage
equals the committed versions' sizes. `make faults` runs more rounds with 40 MB uploads and prints
the figures kept in docs/faults.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from cairn.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cairn.runtime import principal
from cairn.runtime.principal import Principal

from .conftest import RunningStack, child_pids, running_stack
from .test_ledger_rest import ALICE, IOU, auth

pytestmark = pytest.mark.e2e

ROUNDS = int(os.environ.get("CAIRN_FAULTS_ROUNDS", "1"))
UPLOAD_MB = int(os.environ.get("CAIRN_FAULTS_UPLOAD_MB", "0"))  # 0: the fixture component as is
# The acceptance bound is 5 s; CI allows more for a loaded machine, `make faults` checks 5 s.
RECOVERY_LIMIT = float(os.environ.get("CAIRN_FAULTS_RECOVERY_LIMIT", "15"))
PARTS = ("redis", "auth", "project", "component", "ledger", "envoy")
GOLEM_PATHS = ("/v1/components", "/v1/projects")


def padded(wasm: bytes, size: int) -> bytes:
    """A valid component of about `size` bytes: `wasm` plus a custom section of filler."""
    if size <= len(wasm):
        return wasm
    name = b"cairn-filler"
    payload = len(name).to_bytes(1, "little") + name + bytes(size - len(wasm))
    length, encoded = len(payload), bytearray()
    while True:  # unsigned LEB128
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return wasm + b"\x00" + bytes(encoded) + payload


@dataclass
class Tally:
    """What the clients saw."""

    ok: int = 0
    unavailable: int = 0  # clean 503s in the family's shape
    disconnected: int = 0  # refused or reset connections (Envoy down)
    # Uploads whose connection closed while the client was still sending: Envoy answered 503
    # early (the service went away mid-stream) and closed the connection, and a client that
    # sends the whole body before it reads (httpx) sees the close instead of the 503.
    upload_resets: int = 0
    bad: list[str] = field(default_factory=list)
    # When each failed request began, and what it got.
    failures_at: list[tuple[float, str]] = field(default_factory=list)
    contracts: set[str] = field(default_factory=set)  # acknowledged ledger creates
    components: dict[str, int] = field(default_factory=dict)  # acknowledged uploads: id -> size

    def answer(self, reply: httpx.Response, began: float) -> bool:
        """Count a reply to a request sent at `began`; True for a success."""
        if reply.status_code == 200:
            self.ok += 1
            return True
        body = reply.text
        self.failures_at.append((began, f"{reply.request.url.path}: {reply.status_code} {body}"))
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        ledger = not reply.request.url.path.startswith(GOLEM_PATHS)
        clean = reply.status_code == 503 and (
            isinstance(parsed, dict) and parsed.keys() == {"status", "errors"}
            and parsed["status"] == 503 and len(parsed["errors"]) == 1
            and isinstance(parsed["errors"][0], str) and parsed["errors"][0] != ""
            if ledger else
            isinstance(parsed, dict) and parsed.keys() == {"error"}
            and isinstance(parsed["error"], str) and parsed["error"] != ""
        )
        if clean:
            self.unavailable += 1
        else:
            self.bad.append(f"{reply.request.method} {reply.request.url.path}: "
                            f"{reply.status_code} {body[:300]}")
        return False

    def lost(self, began: float) -> None:
        self.disconnected += 1
        self.failures_at.append((began, "connection lost"))


@dataclass
class Figures:
    part: str
    recovery_seconds: float
    restart_cpu_seconds: float  # CPU the new process used to get there (load-independent)
    unavailable: int
    disconnected: int
    late_failures: list[str]
    upload_resets: int


def ledger_json(payload: Any) -> dict[str, Any]:
    return {"content": json.dumps(payload),
            "headers": {**auth(ALICE), "Content-Type": "application/json"}}


async def creates(client: httpx.AsyncClient, tally: Tally, stop: asyncio.Event) -> None:
    while not stop.is_set():
        began = time.monotonic()
        try:
            reply = await client.post("/v1/create", **ledger_json(
                {"templateId": "Iou:Iou", "payload": {**IOU, "currency": "FAULT"}}))
        except httpx.TransportError:
            tally.lost(began)
            await asyncio.sleep(0.05)
            continue
        if tally.answer(reply, began):
            tally.contracts.add(reply.json()["result"]["contractId"])


async def uploads(client: httpx.AsyncClient, tally: Tally, stop: asyncio.Event,
                  wasm: bytes, root: dict[str, str]) -> None:
    while not stop.is_set():
        query = json.dumps({"componentName": f"fault-{uuid.uuid4().hex[:12]}"})
        began = time.monotonic()
        try:
            reply = await client.post(
                "/v1/components", headers=root, data={"query": query},
                files={"component": ("c.wasm", wasm, "application/octet-stream")})
        except httpx.TransportError:
            tally.upload_resets += 1
            tally.failures_at.append((began, "upload connection closed"))
            await asyncio.sleep(0.05)
            continue
        if tally.answer(reply, began):
            tally.components[reply.json()["versionedComponentId"]["componentId"]] = len(wasm)


async def reads(client: httpx.AsyncClient, tally: Tally, stop: asyncio.Event,
                root: dict[str, str]) -> None:
    while not stop.is_set():
        began = time.monotonic()
        try:
            tally.answer(await client.get("/v1/projects/default", headers=root), began)
            began = time.monotonic()
            tally.answer(await client.post("/v1/query", **ledger_json(
                {"templateIds": ["Iou:Iou"], "query": {"currency": "NONE"}})), began)
        except httpx.TransportError:
            tally.lost(began)
            await asyncio.sleep(0.05)


async def serving(client: httpx.AsyncClient, root: dict[str, str]) -> bool:
    """Every part answers: auth (ext_authz) and project, component, ledger, each over Redis."""
    try:
        replies = await asyncio.gather(
            client.get("/v1/projects/default", headers=root),
            client.get("/v1/components", headers=root),
            client.post("/v1/query", **ledger_json({"templateIds": ["Iou:Iou"],
                                                     "query": {"currency": "NONE"}})),
        )
    except httpx.TransportError:
        return False
    return all(r.status_code == 200 for r in replies)


def part_pids(stack: RunningStack) -> dict[str, int]:
    """The stack's children by part name, from their command lines."""
    found = {}
    for pid in child_pids(stack.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        for name in PARTS:
            if (name == "redis" and "redis-server" in text) or (
                name == "envoy" and "envoy" in argv[0].decode(errors="replace")
            ) or f"cairn.{name}" in text:
                found[name] = pid
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def until(check: Callable[[], Awaitable[bool]], limit: float) -> float:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < limit, "not serving again in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    run_dir = tmp_path_factory.mktemp("faults")
    with running_stack(run_dir, {
        "CAIRN_COMPONENT_SPOOL_DIR": str(run_dir / "spool"),
        # Kills in quick succession are the point here, not a crash loop.
        "CAIRN_RESTART_LIMIT": "100",
        "CAIRN_PLAN_COMPONENT_LIMIT": "100000",
        "CAIRN_PLAN_STORAGE_LIMIT": str(1 << 50),
        "CAIRN_PLAN_MONTHLY_UPLOAD_LIMIT": str(1 << 50),
        "CAIRN_COMPONENT_MAX_BYTES": str(max(50_000_000, (UPLOAD_MB + 1) << 20)),
    }) as running:
        yield running


async def usage(stack: RunningStack) -> int:
    """The root account's stored component bytes, as the auth service counts them."""
    secret = (stack.run_dir / "internal-secret").read_text().strip()
    metadata = (("x-cairn-principal", principal.sign(Principal("root"), secret)),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.grpc_ports['auth']}") as channel:
        reply = await auth_service_pb2_grpc.AuthServiceStub(channel).RecordComponentUsage(
            auth_service_pb2.RecordComponentUsageRequest(account_id="root"),
            metadata=metadata, timeout=10)
    return int(reply.usage.storage_bytes)


async def test_every_part_killed_under_load_comes_back_and_nothing_is_lost(
    fault_stack: RunningStack, shared_fixtures: Path
) -> None:
    stack = fault_stack
    root = auth(stack.root_token)
    base = (shared_fixtures / "golem" / "wasm" / "tinygo-wasi.wasm").read_bytes()
    wasm = padded(base, UPLOAD_MB << 20)
    tally = Tally()
    figures: list[Figures] = []
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, limits=limits) as client:
        dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
        reply = await client.post("/v1/packages", content=dar, headers={
            **auth(ALICE), "Content-Type": "application/octet-stream"})
        assert reply.status_code == 200, reply.text
        storage_before = await usage(stack)
        for _ in range(ROUNDS):
            for part in PARTS:
                stop = asyncio.Event()
                load = [asyncio.create_task(w) for w in (
                    creates(client, tally, stop), creates(client, tally, stop),
                    uploads(client, tally, stop, wasm, root), reads(client, tally, stop, root))]
                await asyncio.sleep(0.5)
                before = (tally.unavailable, tally.disconnected, tally.upload_resets)
                survivor = await open_stream(stack, "SURVIVOR") if part == "redis" else None
                os.kill(part_pids(stack)[part], signal.SIGKILL)
                await asyncio.sleep(0.05)  # the kill has landed before we ask
                recovery = await until(lambda: serving(client, root), RECOVERY_LIMIT) + 0.05
                recovered_at = time.monotonic()
                cpu = cpu_seconds(part_pids(stack)[part])
                await asyncio.sleep(1.0)  # load goes on: no burst of failures after the return
                stop.set()
                await asyncio.gather(*load)
                # Requests sent once it serves again all succeed (no burst after the return).
                late = [what for t, what in tally.failures_at if t > recovered_at]
                figures.append(Figures(part, recovery, cpu, tally.unavailable - before[0],
                                       tally.disconnected - before[1], late,
                                       tally.upload_resets - before[2]))
                tally.failures_at.clear()
                if survivor is not None:
                    # A stream open through the Redis restart goes on (the ledger feed fills the
                    # gap from its log), and a stream opened afterwards works at once.
                    await sees_a_new_contract(survivor, client, "SURVIVOR")
                    await survivor.close()
                    fresh = await open_stream(stack, "FRESH")
                    await sees_a_new_contract(fresh, client, "FRESH")
                    await fresh.close()
        load = os.getloadavg()[0]
        print(f"\nfault figures (load average {load:.1f}; part, seconds to serve again, CPU "
              "seconds of the restarted process, clean 503s, dropped connections, uploads "
              "closed early, failures after the return):")
        for f in figures:
            print(f"  {f.part:9} {f.recovery_seconds:5.2f} s  {f.restart_cpu_seconds:5.2f} s  "
                  f"{f.unavailable:4}  {f.disconnected:4}  {f.upload_resets:4}  "
                  f"{len(f.late_failures)}")
        print(f"  totals: {tally.ok} ok, {tally.unavailable} clean 503, {tally.disconnected} "
              f"dropped, {len(tally.contracts)} creates and {len(tally.components)} uploads acked")

        assert tally.bad == [], sorted(set(tally.bad))[:20]
        assert all(f.recovery_seconds < RECOVERY_LIMIT for f in figures)
        assert [(f.part, f.late_failures) for f in figures if f.late_failures] == []
        for f in figures:
            if f.part != "envoy":
                assert f.disconnected == 0, f"{f.part}: Envoy answers while a service is down"
        assert tally.contracts and tally.components, "the load must have written something"

        # 0 acknowledged writes lost.
        query = await client.post("/v1/query", **ledger_json(
            {"templateIds": ["Iou:Iou"], "query": {"currency": "FAULT"}}))
        assert query.status_code == 200, query.text
        stored = {c["contractId"] for c in query.json()["result"]}
        assert tally.contracts <= stored
        for component_id, size in tally.components.items():
            reply = await client.get(f"/v1/components/{component_id}/latest", headers=root)
            assert reply.status_code == 200, reply.text
            assert reply.json()["componentSize"] == size

        # Plan usage equals the committed versions' sizes: what an upload killed with the
        # component service counted is given back once that process's lease has run out.
        listed = await client.get("/v1/components", headers=root)
        committed = sum(c["componentSize"] for c in listed.json()
                        if c["componentName"].startswith("fault-"))
        deadline = time.monotonic() + 30
        while await usage(stack) - storage_before != committed:
            assert time.monotonic() < deadline, (await usage(stack) - storage_before, committed)
            await asyncio.sleep(0.5)

    # 0 leftover spool or blob temp files.
    spool = [p for p in (stack.run_dir / "spool").rglob("*") if p.is_file()]
    temps = [p for p in (stack.run_dir / "blobs" / ".tmp").rglob("*") if p.is_file()]
    assert spool == [] and temps == []


async def open_stream(stack: RunningStack, currency: str) -> ClientConnection:
    """A /v1/stream/query stream through Envoy for Alice's contracts in `currency`."""
    url = stack.base_url.replace("http://", "ws://") + "/v1/stream/query"
    ws = await connect(url, subprotocols=[f"jwt.token.{ALICE}", "daml.ws.auth"])  # type: ignore[list-item]
    await ws.send(json.dumps({"templateIds": ["Iou:Iou"], "query": {"currency": currency}}))
    await asyncio.wait_for(ws.recv(), 10)  # the (empty) snapshot: the stream is live
    return ws


async def sees_a_new_contract(ws: ClientConnection, client: httpx.AsyncClient,
                              currency: str) -> None:
    """A contract created now reaches the stream (heartbeats and snapshots in between)."""
    created = await client.post("/v1/create", **ledger_json(
        {"templateId": "Iou:Iou", "payload": {**IOU, "currency": currency}}))
    assert created.status_code == 200, created.text
    contract_id = created.json()["result"]["contractId"]
    deadline = time.monotonic() + 10
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert "errors" not in message, message
        ids = [e.get("created", {}).get("contractId") for e in message.get("events", [])]
        if contract_id in ids:
            return
        assert time.monotonic() < deadline


async def test_sigterm_drains_calls_in_flight_and_closes_streams_cleanly(
    fault_stack: RunningStack, shared_fixtures: Path
) -> None:
    """`make run` stopped mid-upload with a stream open: Envoy drains first (the upload
    completes), the ledger closes the stream with 1001 (going away), and the stack exits 0."""
    stack = fault_stack
    wasm = padded((shared_fixtures / "golem" / "wasm" / "tinygo-wasi.wasm").read_bytes(),
                  30 << 20)
    url = stack.base_url.replace("http://", "ws://") + "/v1/stream/query"
    protocols = [f"jwt.token.{ALICE}", "daml.ws.auth"]
    async with (httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client,
                connect(url, subprotocols=protocols) as ws):  # type: ignore[arg-type]
        await ws.send(json.dumps({"templateIds": ["Iou:Iou"]}))
        await asyncio.wait_for(ws.recv(), 10)  # the stream is live
        upload = asyncio.create_task(client.post(
            "/v1/components", headers=auth(stack.root_token),
            data={"query": json.dumps({"componentName": "drained"})},
            files={"component": ("c.wasm", wasm, "application/octet-stream")}))
        await asyncio.sleep(0.2)
        stack.process.send_signal(signal.SIGTERM)
        reply = await upload
        assert reply.status_code == 200, reply.text
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert await asyncio.to_thread(stack.process.wait, 30) == 0
