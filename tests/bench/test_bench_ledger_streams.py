"""Ledger stream benchmarks: commit-to-frame latency with many open streams, and snapshot speed.

Run: `.venv/bin/pytest -m bench tests/bench/test_bench_ledger_streams.py -s`. Everything runs in
this one process (the ledger's use cases called directly, the stream server, the websockets
clients) against the session's real Redis, without Envoy; the numbers are in
docs/ledger-streams.md.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from cairn.auth.ledger_jwt import LedgerTokenPolicy
from cairn.ledger.app import LedgerApp
from cairn.ledger.feed import feed_redis
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.streams import StreamSettings
from cairn.ledger.websocket import AUTH_SUBPROTOCOL, StreamServer

pytestmark = pytest.mark.bench

# The JSON API documentation's sandbox token for Alice.
ALICE = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJodHRwczovL2RhbWwuY29tL2xlZGdlci1hcGkiOnsibGVkZ2VySWQi"
    "OiJNeUxlZGdlciIsImFwcGxpY2F0aW9uSWQiOiJIVFRQLUpTT04tQVBJLUdhdGV3YXkiLCJhY3RBcyI6WyJBbGljZSJdfX0"
    ".34zzF_fbWv7p60r5s1kKzwndvGdsJDX-W4Xhm4oVdpk"
)
IOU = {"issuer": "Alice", "owner": "Alice", "currency": "USD", "amount": "999.99",
       "observers": []}
PROTOCOLS = [f"jwt.token.{ALICE}", AUTH_SUBPROTOCOL]


async def start(redis: aioredis.Redis, redis_url: str, tmp_path: Path, shared_fixtures: Path
                ) -> tuple[LedgerApp, StreamServer]:
    """The ledger's parts (commands are issued directly) and its stream server, with the feed's
    own bounded Redis client as in `python -m cairn.ledger`."""
    settings = LedgerSettings(blob_env={"CAIRN_BLOB_DIR": str(tmp_path / "blobs")})
    app = await LedgerApp.start(redis, feed_redis(redis_url), settings, "bench")
    await app.service.upload_dar(
        (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes())
    server = StreamServer(app.streams, LedgerTokenPolicy(), StreamSettings(port=0))
    await server.start("127.0.0.1")
    return app, server


async def create_iou(app: LedgerApp) -> None:
    await app.service.create(await LedgerTokenPolicy().verify(ALICE), "Iou:Iou", IOU)


async def _until_offset(ws: ClientConnection) -> None:
    while "offset" not in json.loads(await asyncio.wait_for(ws.recv(), 30)):
        pass


@pytest.mark.parametrize("streams", [1, 50, 200])
async def test_commit_to_frame_latency(redis: aioredis.Redis, redis_url: str, tmp_path: Path,
                                       shared_fixtures: Path, streams: int) -> None:
    app, server = await start(redis, redis_url, tmp_path, shared_fixtures)
    url = f"ws://127.0.0.1:{server.port}/v1/stream/query"
    sockets = [await connect(url, subprotocols=PROTOCOLS)  # type: ignore[arg-type]
               for _ in range(streams)]
    for ws in sockets:
        await ws.send(json.dumps({"templateIds": ["Iou:Iou"]}))
    for ws in sockets:
        await _until_offset(ws)
    first: list[float] = []
    last: list[float] = []
    for _ in range(30):
        await create_iou(app)
        committed = time.perf_counter()
        arrivals = []
        for ws in sockets:
            await asyncio.wait_for(ws.recv(), 30)
            arrivals.append(time.perf_counter())
        first.append((min(arrivals) - committed) * 1000)
        last.append((max(arrivals) - committed) * 1000)
    print(f"\n{streams} streams: commit -> first frame median {statistics.median(first):.2f} ms, "
          f"-> frame on every stream median {statistics.median(last):.2f} ms "
          f"(max {max(last):.2f} ms) over 30 creates")
    for ws in sockets:
        await ws.close()
    await server.close()
    await app.close()


async def test_snapshot_throughput(redis: aioredis.Redis, redis_url: str, tmp_path: Path,
                                   shared_fixtures: Path) -> None:
    app, server = await start(redis, redis_url, tmp_path, shared_fixtures)
    count = 2000
    for batch in range(0, count, 100):
        await asyncio.gather(*(create_iou(app) for _ in range(batch, batch + 100)))
    url = f"ws://127.0.0.1:{server.port}/v1/stream/query"
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        async with connect(url, subprotocols=PROTOCOLS) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"templateIds": ["Iou:Iou"],
                                      "query": {"amount": {"%gt": 1}}}))
            seen = 0
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                seen += len(message["events"])
                if "offset" in message:
                    break
        timings.append(time.perf_counter() - started)
        assert seen == count
    best = min(timings)
    print(f"\nsnapshot of {count} contracts (query with a range filter): "
          f"median {statistics.median(timings) * 1000:.0f} ms, best {best * 1000:.0f} ms "
          f"= {count / best:.0f} contracts/s")
    await server.close()
    await app.close()
