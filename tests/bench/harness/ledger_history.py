"""The ledger query store's scenarios: queries over 5,000 and 100,000 contracts through Envoy,
memory per contract, and the time a replica takes to build its query store at start.

Contracts are seeded straight into Redis with the ledger's own commit (`LedgerStore.commit`, 500
per transaction) rather than 105,000 REST creates: every seeded contract is a copy of one that
`POST /v1/create` made (same template, signatories and JSON shape; its own contract id and
amount), so the running ledger applies them from the log as it applies any transaction.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from cairn.ledger.model import Commit, StoredContract
from cairn.ledger.store import LedgerStore
from cairn.runtime import redis as redis_connection
from cairn.stack.launcher import REPO_ROOT, free_port

from . import load, procstat
from .load import LoadError
from .scenarios import Bench, Result, ledger_token, wrk_post

SMALL_ACS = 5_000
LARGE_ACS = 100_000
SEED_BATCH = 500


def seed(bench: Bench, party: str, count: int) -> None:
    """`count` active Ious of `party` (amounts 1.01, 2.01, ...) committed straight to Redis."""
    headers = {"Authorization": f"Bearer {ledger_token(party)}"}
    model = httpx.post(bench.url("/v1/create"), headers=headers, timeout=60, json={
        "templateId": "Iou:Iou", "payload": {"issuer": party, "owner": party,
                                             "currency": "USD", "amount": "0.5",
                                             "observers": []}})
    if model.status_code != 200:
        raise LoadError(f"create: {model.status_code} {model.text[:300]}")
    shape = model.json()["result"]
    shape.pop("completionOffset")
    template = StoredContract.from_json(shape, None)

    def copy(number: int) -> StoredContract:
        return StoredContract(
            contract_id="00" + uuid.uuid4().hex + uuid.uuid4().hex,
            template_id=template.template_id,
            payload={**template.payload, "amount": f"{number}.01"},
            signatories=template.signatories, observers=template.observers)

    async def commit_all() -> None:
        redis = redis_connection.connect(bench.stack.stack.settings.redis_url,
                                         timeout_seconds=60)
        store = LedgerStore(redis)
        try:
            for first in range(1, count + 1, SEED_BATCH):
                batch = range(first, min(first + SEED_BATCH, count + 1))
                await store.commit(Commit(created=tuple(copy(n) for n in batch)))
        finally:
            await redis.aclose()

    asyncio.run(commit_all())
    # Archive the model so exactly `count` contracts remain.
    archived = httpx.post(bench.url("/v1/exercise"), headers=headers, timeout=60, json={
        "templateId": "Iou:Iou", "contractId": shape["contractId"], "choice": "Archive",
        "argument": {}})
    if archived.status_code != 200:
        raise LoadError(f"archive: {archived.status_code} {archived.text[:300]}")


def _query(bench: Bench, key: str, title: str, party: str, body: dict[str, Any],
           expect: int) -> Result:
    headers = {"Authorization": f"Bearer {ledger_token(party)}"}
    reply = httpx.post(bench.url("/v1/query"), json=body, headers=headers, timeout=120)
    if reply.status_code != 200 or len(reply.json()["result"]) != expect:
        raise LoadError(f"{key}: {reply.status_code}, expected {expect} contracts")
    script = wrk_post("/v1/query", json.dumps(body), headers)
    size = len(reply.content)
    result = bench.measure(
        key, title, f"wrk; the party's own Ious, all in the ledger's query store; "
                    f"reply {size:,} bytes",
        lambda c, s: load.wrk(bench.url("/v1/query"), connections=c, seconds=s, script=script))
    result.extra["reply_bytes"] = size
    return result


def query_5k(bench: Bench) -> Result:
    seed(bench, "Query5k", SMALL_ACS)
    return _query(bench, "ledger_query_5k",
                  f"ledger query: equality over {SMALL_ACS:,} contracts (1 match)", "Query5k",
                  {"templateIds": ["Iou:Iou"], "query": {"amount": "1717.01"}}, 1)


def query_5k_all(bench: Bench) -> Result:
    return _query(bench, "ledger_query_5k_all",
                  f"ledger query: all {SMALL_ACS:,} contracts returned", "Query5k",
                  {"templateIds": ["Iou:Iou"]}, SMALL_ACS)


def query_100k(bench: Bench) -> Result:
    pid = bench.stack.pids()["ledger"]
    before = procstat.status_kib(pid, "VmRSS")
    started = time.perf_counter()
    seed(bench, "Query100k", LARGE_ACS)
    seeded = time.perf_counter() - started
    result = _query(bench, "ledger_query_100k",
                    f"ledger query: equality over {LARGE_ACS:,} contracts (1 match)",
                    "Query100k",
                    {"templateIds": ["Iou:Iou"], "query": {"amount": "31415.01"}}, 1)
    after = procstat.status_kib(pid, "VmRSS")
    result.extra.update({
        "seed_seconds": round(seeded, 1),
        "ledger_rss_growth_mib": round((after - before) / 1024, 1),
        "bytes_per_contract": round((after - before) * 1024 / LARGE_ACS),
    })
    return result


def rebuild(bench: Bench) -> Result:
    """A second ledger replica started on the seeded Redis: the time from spawn until its query
    store is loaded (its own log line), and its resident memory with it."""
    result = Result("ledger_rebuild", "ledger replica start: build the query store",
                    "a second `python -m cairn.ledger` on the same Redis; "
                    "`ledger_query_store_loaded` seconds, VmRSS when serving")
    log_path = bench.work / "replica.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")},
           **bench.stack.stack.env,
           "CAIRN_LEDGER_GRPC_PORT": str(free_port()), "CAIRN_LEDGER_WS_PORT": str(free_port()),
           "CAIRN_LOG_FORMAT": "json", "CAIRN_LOG_LEVEL": "info"}
    started = time.perf_counter()
    with log_path.open("wb") as out:
        replica = subprocess.Popen([sys.executable, "-m", "cairn.ledger"], cwd=REPO_ROOT,
                                   env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        events: dict[str, dict[str, Any]] = {}
        while "service_started" not in events:
            if replica.poll() is not None or time.perf_counter() - started > 600:
                raise LoadError(f"replica: {log_path.read_text()[-500:]}")
            time.sleep(0.2)
            events = _log_events(log_path.read_text(errors="replace"))
        serving = time.perf_counter() - started
        loaded = events.get("ledger_query_store_loaded", {})
        result.extra = {
            "contracts": loaded.get("contracts"),
            "load_seconds": loaded.get("seconds"),
            "start_to_serving_seconds": round(serving, 2),
            "replica_rss_mib": round(procstat.status_kib(replica.pid, "VmRSS") / 1024, 1),
        }
    except LoadError as err:
        result.error = str(err)
    finally:
        replica.terminate()
        replica.wait(30)
    return result


def _log_events(text: str) -> dict[str, dict[str, Any]]:
    """The JSON log lines of a process, by event name (the last of each)."""
    events = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "event" in entry:
            events[str(entry["event"])] = entry
    return events
