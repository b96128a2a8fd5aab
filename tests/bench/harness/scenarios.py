"""The scenarios: what each one sends, and how its figures are taken.

Every request/response scenario runs three times from a fresh load process: a 1-second warm-up at
16 connections (discarded), a latency run at 1 connection (p50/p99, and the CPU time every process
spent per request), and a throughput run at 16 connections. The upload and the WebSocket fan-out
have their own methods (see their functions).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from google.protobuf import struct_pb2

from cairn.auth.ledger_jwt import encode_jwt_hs256
from cairn.ledger.v1 import ledger_service_pb2
from cairn.project.v1 import project_service_pb2

from . import load, procstat
from .load import LoadError, Measurement
from .stack import ECHO_PATH, FLOOR_PATH, BenchStack

LATENCY_CONNECTIONS = 1
THROUGHPUT_CONNECTIONS = 16
QUERY_ACS = 1000  # contracts of the querying party
FANOUT_SUBSCRIBERS = 100
FANOUT_COMMITS = 60
UPLOAD_BYTES = 50_000_000
UPLOAD_ROUNDS = 3
COMPONENT_FIXTURE = "wasmast_shopping-cart.wasm"
DAR_FIXTURE = "model-tests-1.15.dar"

RunLoad = Callable[[int, float], Measurement]


@dataclass
class Result:
    key: str
    title: str
    method: str
    latency: Measurement | None = None  # 1 connection
    throughput: Measurement | None = None  # 16 connections
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per request, latency run
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "title": self.title, "method": self.method,
            "latency": self.latency.to_json() if self.latency else None,
            "throughput": self.throughput.to_json() if self.throughput else None,
            "cpu_ms_per_request": {k: round(v, 3) for k, v in self.cpu_ms.items()},
            "extra": self.extra, "error": self.error,
        }


def ledger_token(party: str) -> str:
    claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger", "applicationId": "bench",
                                              "actAs": [party]}}
    return encode_jwt_hs256(claims, "sandbox mode does not check signatures")


def iou(party: str, amount: str = "999.99") -> dict[str, Any]:
    return {"issuer": party, "owner": party, "currency": "USD", "amount": amount,
            "observers": []}


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def _wrk_headers(headers: dict[str, str]) -> str:
    return "".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}\n"
                   for k, v in headers.items())


def wrk_post(path: str, body: str, headers: dict[str, str]) -> str:
    return (f'wrk.method = "POST"\nwrk.path = {_lua_string(path)}\n'
            f"wrk.body = {_lua_string(body)}\n"
            + _wrk_headers({"Content-Type": "application/json", **headers}))


class Bench:
    """One run's stack, settings and the state scenarios share (tokens, seeded contracts)."""

    def __init__(self, stack: BenchStack, seconds: float, fixtures: Path, work: Path) -> None:
        self.stack = stack
        self.seconds = seconds
        self.fixtures = fixtures
        self.work = work
        self.root = {"Authorization": f"Bearer {stack.stack.root_token}"}
        self.alice = {"Authorization": f"Bearer {ledger_token('Alice')}"}
        self.create_rps: dict[int, float] = {}
        self.runs: dict[str, RunLoad] = {}  # each measured scenario's load, for the profile pass

    def url(self, path: str) -> str:
        return self.stack.http + path

    def measure(self, key: str, title: str, method: str, run: RunLoad,
                warm_up: bool = True) -> Result:
        result = Result(key, title, method)
        self.runs[key] = run
        try:
            if warm_up:
                run(THROUGHPUT_CONNECTIONS, 1)
            meter = procstat.CpuMeter(self.stack.pids())
            meter.start()
            result.latency = run(LATENCY_CONNECTIONS, self.seconds)
            spent = meter.stop()
            result.cpu_ms = {name: seconds * 1000 / result.latency.requests
                             for name, seconds in spent.items() if seconds > 0}
            result.throughput = run(THROUGHPUT_CONNECTIONS, self.seconds)
        except LoadError as err:
            result.error = str(err)
        return result

    # ------------------------------------------------------------------ floors
    def floor_http(self) -> Result:
        return self.measure(
            "floor_http", "Envoy alone: direct-response route (HTTP/1.1)",
            f"wrk GET {FLOOR_PATH}: Envoy answers itself, no filter runs",
            lambda c, s: load.wrk(self.url(FLOOR_PATH), connections=c, seconds=s))

    def floor_grpc(self) -> Result:
        return self.measure(
            "floor_grpc", "bare grpc.aio echo through Envoy (native gRPC)",
            f"h2load {ECHO_PATH}, 5-byte message; no auth, no interceptor, no logging",
            lambda c, s: load.h2load_grpc(f"http://{self.stack.host_port}{ECHO_PATH}",
                                          b"hello", connections=c, seconds=s))

    def echo_direct(self) -> Result:
        return self.measure(
            "echo_direct", "bare grpc.aio echo, direct (no Envoy)",
            "h2load straight to the echo process: the Python gRPC floor without Envoy's hop",
            lambda c, s: load.h2load_grpc(f"http://127.0.0.1:{self.stack.echo_port}{ECHO_PATH}",
                                          b"hello", connections=c, seconds=s))

    # ------------------------------------------------------------------ Golem
    def rest_cheapest(self) -> Result:
        script = _wrk_headers(self.root)
        return self.measure(
            "rest_cheapest", "cheapest authenticated REST call: GET /v1/projects/default",
            "wrk; root token (ext_authz -> auth service), project service, Redis",
            lambda c, s: load.wrk(self.url("/v1/projects/default"), connections=c, seconds=s,
                                  script=script))

    def grpc_cheapest(self) -> Result:
        path = "/cairn.project.v1.ProjectService/GetDefaultProject"
        message = project_service_pb2.GetDefaultProjectRequest().SerializeToString()
        self._check_grpc(path, message, self.root, project_service_pb2.GetDefaultProjectResponse)
        return self.measure(
            "grpc_cheapest", "cheapest native gRPC call: ProjectService/GetDefaultProject",
            "h2load through Envoy with the root token (same path as REST, without transcoding)",
            lambda c, s: load.h2load_grpc(f"http://{self.stack.host_port}{path}", message,
                                          connections=c, seconds=s,
                                          headers={k.lower(): v for k, v in self.root.items()}))

    def component_create(self) -> Result:
        wasm = self.fixtures / "golem" / "wasm" / COMPONENT_FIXTURE

        def run(connections: int, seconds: float) -> Measurement:
            prefix = f"bench-{uuid.uuid4().hex[:8]}-"
            script = _wrk_headers(self.root) + f"""
local f = assert(io.open({_lua_string(str(wasm))}, "rb"))
local wasm = f:read("*a")
f:close()
local boundary = "cairnbenchboundary"
local n = 0
local headers = {{["Authorization"] = wrk.headers["Authorization"],
                 ["Content-Type"] = "multipart/form-data; boundary=" .. boundary}}
request = function()
  n = n + 1
  local body = "--" .. boundary .. "\\r\\n"
    .. 'Content-Disposition: form-data; name="query"\\r\\n\\r\\n'
    .. '{{"componentName":"{prefix}' .. n .. '"}}\\r\\n'
    .. "--" .. boundary .. "\\r\\n"
    .. 'Content-Disposition: form-data; name="component"; filename="c.wasm"\\r\\n'
    .. "Content-Type: application/wasm\\r\\n\\r\\n" .. wasm .. "\\r\\n--" .. boundary .. "--\\r\\n"
  return wrk.format("POST", "/v1/components", headers, body)
end
"""
            return load.wrk(self.url("/v1/components"), connections=connections,
                            seconds=seconds, script=script)

        size = wasm.stat().st_size
        return self.measure(
            "component_create", f"component create: POST /v1/components ({size // 1000} KB)",
            f"wrk; multipart form with {COMPONENT_FIXTURE}, a new component name each request",
            run)

    # ------------------------------------------------------------------ ledger
    def upload_dar(self) -> None:
        dar = (self.fixtures / "daml" / DAR_FIXTURE).read_bytes()
        reply = httpx.post(self.url("/v1/packages"), content=dar, timeout=120, headers={
            **self.alice, "Content-Type": "application/octet-stream"})
        if reply.status_code != 200:
            raise LoadError(f"DAR upload: {reply.status_code} {reply.text[:300]}")

    def ledger_create(self) -> Result:
        script = wrk_post("/v1/create", json.dumps({"templateId": "Iou:Iou",
                                                    "payload": iou("Alice")}), self.alice)
        result = self.measure(
            "ledger_create", "ledger create: POST /v1/create (Iou:Iou)",
            "wrk; sandbox JWT for Alice (ext_authz), engine, one Redis commit",
            lambda c, s: load.wrk(self.url("/v1/create"), connections=c, seconds=s,
                                  script=script))
        if result.latency and result.throughput:
            self.create_rps = {1: result.latency.rps, 16: result.throughput.rps}
        return result

    def ledger_create_grpc(self) -> Result:
        path = "/cairn.ledger.v1.LedgerService/Create"
        payload = struct_pb2.Value()
        payload.struct_value.update(iou("Alice"))
        message = ledger_service_pb2.CreateRequest(
            template_id="Iou:Iou", payload=payload).SerializeToString()
        self._check_grpc(path, message, self.alice, ledger_service_pb2.CreateResponse)
        return self.measure(
            "ledger_create_grpc", "ledger create, native gRPC: LedgerService/Create",
            "h2load through Envoy; the same command as a typed message",
            lambda c, s: load.h2load_grpc(f"http://{self.stack.host_port}{path}", message,
                                          connections=c, seconds=s,
                                          headers={k.lower(): v for k, v in self.alice.items()}))

    def ledger_exercise(self) -> Result:
        """Iou_Transfer on Alice's Ious from the create scenarios, each contract once."""
        ids = self._active_contracts(self.alice)
        # An exercise does more than a create, so the create rates bound how many ids a run
        # can consume; a run that still runs out fails with non-2xx responses.
        need = {c: math.ceil(self.create_rps.get(c, 0) * self.seconds * 1.1) + 50
                for c in (LATENCY_CONNECTIONS, THROUGHPUT_CONNECTIONS)}
        if sum(need.values()) > len(ids):
            need = {c: len(ids) * n // sum(need.values()) for c, n in need.items()}

        def run(connections: int, seconds: float) -> Measurement:
            batch = [ids.pop() for _ in range(min(need[connections], len(ids)))]
            id_file = self.work / f"exercise-ids-{connections}.txt"
            id_file.write_text("\n".join(batch) + "\n")
            script = _wrk_headers({"Content-Type": "application/json", **self.alice}) + f"""
local ids = {{}}
for line in io.lines({_lua_string(str(id_file))}) do ids[#ids + 1] = line end
local i = 0
request = function()
  i = i + 1
  local body = '{{"templateId":"Iou:Iou","contractId":"' .. (ids[i] or "none")
    .. '","choice":"Iou_Transfer","argument":{{"newOwner":"Bob"}}}}'
  return wrk.format("POST", "/v1/exercise", nil, body)
end
"""
            return load.wrk(self.url("/v1/exercise"), connections=connections,
                            seconds=seconds, script=script)

        return self.measure(
            "ledger_exercise", "ledger exercise: POST /v1/exercise (Iou_Transfer)",
            "wrk (a C client); each request a different Alice Iou from the create runs",
            run, warm_up=False)

    def ledger_create_and_exercise(self) -> Result:
        body = json.dumps({"templateId": "Iou:Iou", "payload": iou("Alice"),
                           "choice": "Iou_Transfer", "argument": {"newOwner": "Bob"}})
        script = wrk_post("/v1/create-and-exercise", body, self.alice)
        return self.measure(
            "ledger_create_and_exercise",
            "ledger create-and-exercise: POST /v1/create-and-exercise",
            "wrk; Iou:Iou created and transferred in one command",
            lambda c, s: load.wrk(self.url("/v1/create-and-exercise"), connections=c,
                                  seconds=s, script=script))

    def ledger_query(self) -> Result:
        querier = {"Authorization": f"Bearer {ledger_token('Querier')}"}
        asyncio.run(self._seed("Querier", QUERY_ACS))
        body = json.dumps({"templateIds": ["Iou:Iou"], "query": {"amount": "17.01"}})
        script = wrk_post("/v1/query", body, querier)
        return self.measure(
            "ledger_query", f"ledger query: POST /v1/query, {QUERY_ACS} contracts, 1 match",
            f"wrk; equality filter on amount over a party's {QUERY_ACS} active Ious",
            lambda c, s: load.wrk(self.url("/v1/query"), connections=c, seconds=s,
                                  script=script))

    # ------------------------------------------------------------------ helpers
    def _check_grpc(self, path: str, message: bytes, headers: dict[str, str],
                    reply_type: Any) -> None:
        """One call with a real gRPC client: h2load cannot see the gRPC status."""
        import grpc

        with grpc.insecure_channel(self.stack.host_port) as channel:
            call = channel.unary_unary(path, None, reply_type.FromString)
            try:
                call(message, metadata=tuple((k.lower(), v) for k, v in headers.items()),
                     timeout=10)
            except grpc.RpcError as err:
                raise LoadError(f"{path}: {err}") from None

    def _active_contracts(self, headers: dict[str, str]) -> list[str]:
        reply = httpx.post(self.url("/v1/query"), json={"templateIds": ["Iou:Iou"]},
                           headers=headers, timeout=300)
        reply.raise_for_status()
        return [c["contractId"] for c in reply.json()["result"]]

    async def _seed(self, party: str, count: int) -> None:
        headers = {"Authorization": f"Bearer {ledger_token(party)}"}
        amounts = [f"{i}.01" for i in range(count)]
        async with httpx.AsyncClient(base_url=self.stack.http, timeout=120,
                                     headers=headers) as client:
            async def worker() -> None:
                while amounts:
                    payload = iou(party, amounts.pop())
                    reply = await client.post("/v1/create", json={"templateId": "Iou:Iou",
                                                                  "payload": payload})
                    reply.raise_for_status()

            await asyncio.gather(*(worker() for _ in range(THROUGHPUT_CONNECTIONS)))

    # ------------------------------------------------------------------ special
    def upload_50mb(self) -> Result:
        """PUT of a 50 MB component through Envoy; the component service's peak RSS growth.

        Each round resets the service's VmHWM (/proc/PID/clear_refs) and takes growth = peak
        during the upload minus RSS before it. Throughput = bytes / wall time of the PUT.
        """
        result = Result("upload_50mb", f"component upload: PUT .../upload, "
                        f"{UPLOAD_BYTES // 1_000_000} MB",
                        f"httpx, {UPLOAD_ROUNDS} rounds on one connection, each followed by a "
                        "checked download; median throughput, largest peak-RSS growth of the "
                        "component service")
        base = (self.fixtures / "golem" / "wasm" / COMPONENT_FIXTURE).read_bytes()
        big = padded_component(base, UPLOAD_BYTES)
        pid = self.stack.pids()["component"]
        rounds = []
        try:
            with httpx.Client(base_url=self.stack.http, timeout=300, headers=self.root) as client:
                created = client.post("/v1/components", files={
                    "query": (None, json.dumps({"componentName": f"up-{uuid.uuid4().hex[:8]}"})),
                    "component": ("c.wasm", base)})
                if created.status_code != 200:
                    raise LoadError(f"component create: {created.status_code} {created.text}")
                component = created.json()["versionedComponentId"]["componentId"]
                for _ in range(UPLOAD_ROUNDS):
                    before = procstat.status_kib(pid, "VmRSS")
                    procstat.reset_peak_rss(pid)
                    started = time.perf_counter()
                    reply = client.put(f"/v1/components/{component}/upload", content=big,
                                       headers={"Content-Type": "application/octet-stream"})
                    seconds = time.perf_counter() - started
                    if reply.status_code != 200:
                        raise LoadError(f"upload: {reply.status_code} {reply.text[:300]}")
                    peak = procstat.status_kib(pid, "VmHWM")
                    version = reply.json()["versionedComponentId"]["version"]
                    started = time.perf_counter()
                    download = client.get(f"/v1/components/{component}/download",
                                          params={"version": version})
                    download_seconds = time.perf_counter() - started
                    if download.content != big:
                        raise LoadError(f"download: {download.status_code}, not the upload")
                    rounds.append({"seconds": round(seconds, 4),
                                   "mb_per_s": round(UPLOAD_BYTES / 1e6 / seconds, 1),
                                   "rss_growth_mib": round((peak - before) / 1024, 1),
                                   "download_mb_per_s": round(
                                       UPLOAD_BYTES / 1e6 / download_seconds, 1)})
        except LoadError as err:
            result.error = str(err)
        if rounds:
            speeds = sorted(r["mb_per_s"] for r in rounds)
            downloads = sorted(r["download_mb_per_s"] for r in rounds)
            result.extra = {"rounds": rounds, "mb_per_s": speeds[len(speeds) // 2],
                            "rss_growth_mib": max(r["rss_growth_mib"] for r in rounds),
                            "download_mb_per_s": downloads[len(downloads) // 2]}
        return result

    def ws_fanout(self) -> Result:
        """100 WebSocket subscribers through Envoy; each commit's delivery to all of them.

        Latency of one delivery = frame received by a subscriber minus the moment the create
        request was sent (so it includes the create itself). Commits are sequential: the next
        create is sent once every subscriber has its frame.
        """
        result = Result("ws_fanout", f"WebSocket fan-out: {FANOUT_SUBSCRIBERS} subscribers on "
                        "/v1/stream/query", f"websockets clients through Envoy, "
                        f"{FANOUT_COMMITS} sequential creates; create sent -> frame received")
        try:
            samples, creates, seconds = asyncio.run(self._fanout())
        except (LoadError, OSError, TimeoutError) as err:
            result.error = str(err)
            return result
        result.latency = load.from_samples("websockets", FANOUT_SUBSCRIBERS, seconds, samples)
        create = load.from_samples("httpx", 1, seconds, creates)
        result.extra = {"deliveries": len(samples), "create_p50_ms": round(create.p50_ms, 3),
                        "create_p99_ms": round(create.p99_ms, 3)}
        return result

    async def _fanout(self) -> tuple[list[float], list[float], float]:
        from websockets.asyncio.client import ClientConnection, connect

        token = ledger_token("Watcher")
        url = f"ws://{self.stack.host_port}/v1/stream/query"
        protocols: Any = [f"jwt.token.{token}", "daml.ws.auth"]
        sockets: list[ClientConnection] = []

        async def next_events(ws: ClientConnection) -> float:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message.get("events"):
                    return time.perf_counter()

        async def until_live(ws: ClientConnection) -> None:
            while "offset" not in json.loads(await asyncio.wait_for(ws.recv(), 30)):
                pass

        samples: list[float] = []
        creates: list[float] = []
        body = {"templateId": "Iou:Iou", "payload": iou("Watcher")}
        try:
            for _ in range(FANOUT_SUBSCRIBERS):
                sockets.append(await connect(url, subprotocols=protocols, max_size=None))
            for ws in sockets:
                await ws.send(json.dumps({"templateIds": ["Iou:Iou"]}))
            await asyncio.gather(*(until_live(ws) for ws in sockets))
            async with httpx.AsyncClient(base_url=self.stack.http, timeout=30, headers={
                    "Authorization": f"Bearer {token}"}) as client:
                started_all = time.perf_counter()
                for _ in range(FANOUT_COMMITS):
                    sent = time.perf_counter()
                    create = asyncio.ensure_future(client.post("/v1/create", json=body))
                    arrivals = await asyncio.gather(*(next_events(ws) for ws in sockets))
                    reply = await create
                    if reply.status_code != 200:
                        raise LoadError(f"create: {reply.status_code} {reply.text[:300]}")
                    creates.append((reply.elapsed.total_seconds()) * 1000)
                    samples.extend((t - sent) * 1000 for t in arrivals)
                seconds = time.perf_counter() - started_all
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        return samples, creates, seconds


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def padded_component(base: bytes, total: int) -> bytes:
    """`base` plus one custom section whose payload brings the binary to exactly `total` bytes."""
    name = b"cairn-bench-padding"
    content = _leb128(len(name)) + name
    for payload in range(total - len(base) - len(content) - 12, total - len(base)):
        section = b"\x00" + _leb128(len(content) + payload) + content
        if len(base) + len(section) + payload == total:
            return base + section + bytes(payload)
    raise ValueError("no padding fits")
