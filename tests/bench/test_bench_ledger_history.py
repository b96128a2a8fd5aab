"""Query store benchmarks, in one process against the session's real Redis (no gRPC, no Envoy):
building the query store of 100,000 contracts, its memory per contract, and queries over 5,000
and 100,000 contracts through `LedgerService.query` (consistency read included).

Run: `.venv/bin/pytest -m bench tests/bench/test_bench_ledger_history.py -s` (`make bench-micro`
runs it with the others). The through-Envoy figures are `make bench`'s `ledger_query_*` and
`ledger_rebuild` scenarios; both are in docs/ledger-service.md.
"""

from __future__ import annotations

import gc
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from cairn.auth.ledger_jwt import LedgerClaims
from cairn.ledger.feed import LedgerFeed
from cairn.ledger.model import Commit, StoredContract
from cairn.ledger.packages import PackageRegistry
from cairn.ledger.querystore import QueryStore
from cairn.ledger.service import LedgerService
from cairn.ledger.settings import LedgerSettings
from cairn.ledger.store import LedgerStore

pytestmark = pytest.mark.bench

TEMPLATE = "41df902af320227f24036cb113173b9133c222b341294544017bbd2534b28d35:Iou:Iou"
LARGE, SMALL = 100_000, 5_000
BATCH = 500
REPEATS = 20


def iou(party: str, number: int) -> StoredContract:
    """An Iou as `POST /v1/create` stores it (issuer = owner: one signatory)."""
    return StoredContract("00" + uuid.uuid4().hex + uuid.uuid4().hex, TEMPLATE,
                          {"issuer": party, "owner": party, "currency": "USD",
                           "amount": f"{number}.01", "observers": []}, (party,), ())


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def report(name: str, timings: list[tuple[float, float]]) -> None:
    """Wall and CPU time (the CPU figure is what a busy shared machine distorts least)."""
    wall = sorted(w * 1000 for w, _ in timings)
    cpu = sorted(c * 1000 for _, c in timings)
    print(f"{name}: median {statistics.median(wall):.2f} ms wall ({wall[0]:.2f}-{wall[-1]:.2f}),"
          f" {statistics.median(cpu):.2f} ms CPU, over {len(timings)}")


async def test_query_store_build_memory_and_queries(redis: aioredis.Redis,
                                                    shared_fixtures: Path,
                                                    tmp_path: Path) -> None:
    store = LedgerStore(redis)
    started = time.perf_counter()
    for party, count in (("Large", LARGE), ("Small", SMALL)):
        for first in range(1, count + 1, BATCH):
            batch = range(first, min(first + BATCH, count + 1))
            await store.commit(Commit(created=tuple(iou(party, n) for n in batch)))
    print(f"\nseeded {LARGE + SMALL:,} contracts in {time.perf_counter() - started:.1f} s")

    gc.collect()
    before = rss_kib()
    feed = LedgerFeed(redis, store, QueryStore())
    started, cpu = time.perf_counter(), time.process_time()
    await feed.start()
    built, built_cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.collect()
    grown = rss_kib() - before
    print(f"query store of {len(feed.query_store):,} contracts built in {built:.2f} s "
          f"({built_cpu:.2f} s CPU in this process; scan, parse, index); resident memory "
          f"+{grown / 1024:.1f} MiB = {grown * 1024 / len(feed.query_store):.0f} bytes per "
          f"contract")

    settings = LedgerSettings(blob_env={"CAIRN_BLOB_DIR": str(tmp_path / "blobs")})
    packages = PackageRegistry(store, settings.blob_store(), settings.max_dar_bytes)
    service = LedgerService(store, packages, feed)
    await service.upload_dar((shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes())

    async def timed(party: str, query: dict[str, Any] | None,
                    expect: int) -> list[tuple[float, float]]:
        claims = LedgerClaims("MyLedger", "bench", (party,))
        times = []
        for _ in range(REPEATS):
            begun, cpu = time.perf_counter(), time.process_time()
            found = await service.query(claims, ["Iou:Iou"], query)
            times.append((time.perf_counter() - begun, time.process_time() - cpu))
            assert len(found.contracts) == expect
        return times

    report(f"equality query over {SMALL:,}", await timed("Small", {"amount": "1717.01"}, 1))
    report(f"all {SMALL:,} returned", await timed("Small", None, SMALL))
    report(f"equality query over {LARGE:,}", await timed("Large", {"amount": "31415.01"}, 1))
    report(f"range query over {LARGE:,} (1,000 match)",
           await timed("Large", {"amount": {"%gt": "99000.01"}}, 1000))
    await feed.close()
