"""Benchmark: ledger create latency and throughput, and query time over 5,000 contracts.

Run with `.venv/bin/pytest -m bench tests/bench/test_bench_ledger_service.py -s`.

It starts the real stack (`python -m cairn.stack`, as `make run` does: Redis, the services, Envoy
with ext_authz checking the ledger JWT on every call) on free ports, uploads model-tests-1.15.dar
and then, all through Envoy's REST port with httpx:
- latency: SEQUENTIAL sequential `POST /v1/create` of the documented Iou on one keep-alive
  connection, after WARMUP unmeasured creates; wall time around each call (`time.perf_counter`);
- throughput: CONCURRENT_TOTAL creates from CONCURRENCY concurrent asyncio clients; total wall
  time over the whole batch;
- query: ACS_SIZE Ious of a fresh party (amounts 1.01, 2.01, ...), then QUERIES `POST /v1/query`
  equality queries on `amount` (one match each, as the JSON API perf scenario does), and
  FULL_QUERIES queries returning all ACS_SIZE contracts.
The numbers go in docs/ledger-service.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cairn.auth.ledger_jwt import encode_jwt_hs256
from cairn.stack.launcher import REPO_ROOT, free_port

pytestmark = pytest.mark.bench

WARMUP = 50
SEQUENTIAL = 500
CONCURRENCY = 16
CONCURRENT_TOTAL = 2000
ACS_SIZE = 5000
QUERIES = 100
FULL_QUERIES = 10


def token(party: str) -> str:
    claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger",
                                              "applicationId": "bench", "actAs": [party]}}
    return encode_jwt_hs256(claims, "sandbox mode does not check this secret")


def iou(party: str, amount: str) -> str:
    return json.dumps({"templateId": "Iou:Iou", "payload": {
        "issuer": party, "owner": party, "currency": "USD", "amount": amount, "observers": []}})


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    base_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("ledger-bench")
    ports = {name: free_port() for name in ("project", "component", "auth", "ledger")}
    http_port = free_port()
    env = {
        **os.environ,
        "CAIRN_RUN_DIR": str(run_dir),
        "CAIRN_HTTP_PORT": str(http_port),
        "CAIRN_ENVOY_ADMIN_PORT": str(free_port()),
        "CAIRN_LOG_LEVEL": "warning",
        **{f"CAIRN_{n.upper()}_GRPC_PORT": str(p) for n, p in ports.items()},
    }
    env.pop("CAIRN_REDIS_URL", None)
    log_path = run_dir / "stack.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "cairn.stack"], cwd=REPO_ROOT,
                                   env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while "Cairn is running" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"stack did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)
    yield Stack(process, f"http://127.0.0.1:{http_port}")
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{name}: n={len(ms)} mean={statistics.mean(ms):.2f} ms "
          f"p50={percentile(ms, 0.5):.2f} p95={percentile(ms, 0.95):.2f} "
          f"p99={percentile(ms, 0.99):.2f} max={max(ms):.2f} ms")


def test_ledger_create_and_query(stack: Stack, shared_fixtures: Path) -> None:
    dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
    alice = {"Authorization": f"Bearer {token('Alice')}", "Content-Type": "application/json"}
    with httpx.Client(base_url=stack.base_url, timeout=120) as client:
        uploaded = client.post("/v1/packages", content=dar, headers={
            **alice, "Content-Type": "application/octet-stream"})
        assert uploaded.status_code == 200, uploaded.text
        for _ in range(WARMUP):
            assert client.post("/v1/create", content=iou("Alice", "1.0"),
                               headers=alice).status_code == 200
        latencies = []
        for _ in range(SEQUENTIAL):
            started = time.perf_counter()
            reply = client.post("/v1/create", content=iou("Alice", "999.99"), headers=alice)
            latencies.append(time.perf_counter() - started)
            assert reply.status_code == 200
        report("create latency (sequential)", latencies)

    async def concurrent_creates() -> float:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=120,
                                     limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
            remaining = list(range(CONCURRENT_TOTAL))

            async def worker() -> None:
                while remaining:
                    remaining.pop()
                    reply = await client.post("/v1/create", content=iou("Alice", "5.0"),
                                              headers=alice)
                    assert reply.status_code == 200

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            return time.perf_counter() - started

    elapsed = asyncio.run(concurrent_creates())
    print(f"create throughput: {CONCURRENT_TOTAL} creates, {CONCURRENCY} concurrent clients, "
          f"{elapsed:.2f} s = {CONCURRENT_TOTAL / elapsed:.0f} creates/s")

    bench = {"Authorization": f"Bearer {token('BenchParty')}",
             "Content-Type": "application/json"}

    async def fill_acs() -> None:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=120,
                                     limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
            amounts = [f"{i}.01" for i in range(1, ACS_SIZE + 1)]

            async def worker() -> None:
                while amounts:
                    reply = await client.post("/v1/create",
                                              content=iou("BenchParty", amounts.pop()),
                                              headers=bench)
                    assert reply.status_code == 200

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    asyncio.run(fill_acs())
    with httpx.Client(base_url=stack.base_url, timeout=120) as client:
        times = []
        for i in range(QUERIES):
            amount = (i * 37) % ACS_SIZE + 1
            body = json.dumps({"templateIds": ["Iou:Iou"], "query": {"amount": f"{amount}.01"}})
            started = time.perf_counter()
            reply = client.post("/v1/query", content=body, headers=bench)
            times.append(time.perf_counter() - started)
            assert len(reply.json()["result"]) == 1
        report(f"query, {ACS_SIZE} contracts, equality on amount (1 match)", times)
        full = []
        for _ in range(FULL_QUERIES):
            started = time.perf_counter()
            reply = client.post("/v1/query", content=json.dumps({"templateIds": ["Iou:Iou"]}),
                                headers=bench)
            full.append(time.perf_counter() - started)
            assert len(reply.json()["result"]) == ACS_SIZE
        report(f"query, {ACS_SIZE} contracts, all returned ({len(reply.content)} bytes)", full)
