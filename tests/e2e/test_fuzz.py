"""Fuzzing through the real stack (docs/hardening.md): mutated requests over every REST path,
damaged WASM/DAR/zip uploads, schemathesis's negative cases from Golem's and Cairn's OpenAPI
documents, and slow-drip connections. Promises checked on every call: no 5xx, an answer within
5 s, and a refused request leaves Redis exactly as it was.

The stack is this module's own (fuzz data stays out of the shared one), with Envoy's client
timeouts short enough to test. Bounded for `make test`; `make fuzz` runs the acceptance numbers
(FUZZ_REQUESTS, FUZZ_BINARIES, FUZZ_SCHEMA_EXAMPLES, FUZZ_DRIPS; FUZZ_REPORT names a JSON file
for the totals).
"""

from __future__ import annotations

import json
import os
import random
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as syncredis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.modes import GenerationMode

from cairn.stack.envoy_config import OPENAPI_DOCUMENT
from tests.damage import damaged

from .conftest import RunningStack, running_stack
from .fuzz import (
    LEDGER_PATHS,
    Judge,
    Report,
    World,
    files_zip,
    fixture_inputs,
    hostile_requests,
    targets,
)
from .hostile import ALICE, bearer
from .openapi_seeds import make_seeds
from .test_golem_document_conformance import FAMILIES as GOLEM_FAMILIES

pytestmark = pytest.mark.e2e

REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "120"))
BINARIES = int(os.environ.get("FUZZ_BINARIES", "24"))
SCHEMA_EXAMPLES = int(os.environ.get("FUZZ_SCHEMA_EXAMPLES", "25"))
DRIPS = int(os.environ.get("FUZZ_DRIPS", "24"))
# `make test` replays the same inputs every run; `make fuzz` draws new ones.
DERANDOMIZE = os.environ.get("FUZZ_RANDOM", "") != "1"
GOLEM_DOCUMENT = Path(__file__).resolve().parents[3] / "shared" / "spec" / \
    "golem-cloud-openapi-2024-12.yaml"

# Short client timeouts, so the slow-drip test ends quickly; fuzz calls are far faster.
EDGE = {
    "CAIRN_ENVOY_HEADERS_TIMEOUT_SECONDS": "2",
    "CAIRN_ENVOY_IDLE_TIMEOUT_SECONDS": "3",
    "CAIRN_ENVOY_REQUEST_TIMEOUT_SECONDS": "4",
    "CAIRN_ENVOY_TRANSFER_TIMEOUT_SECONDS": "6",
    "CAIRN_LOG_LEVEL": "warning",
}
IOU = {"issuer": "Alice", "owner": "Alice", "currency": "USD", "amount": "10.0",
       "observers": []}
REPORTS: dict[str, Report] = {}
# The slow-drip test's figures, for the JSON report.
DRIP_FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("fuzz-stack"), EDGE) as running:
        yield running
    summary: dict[str, Any] = {name: report.as_json() for name, report in REPORTS.items()}
    if DRIP_FIGURES:
        summary["slow-drip"] = DRIP_FIGURES
    if os.environ.get("FUZZ_REPORT"):
        Path(os.environ["FUZZ_REPORT"]).write_text(json.dumps(summary, indent=2) + "\n")


@pytest.fixture(scope="module")
def world(fuzz_stack: RunningStack, shared_fixtures: Path) -> World:
    seeds = make_seeds(fuzz_stack.base_url, fuzz_stack.root_token,
                       shared_fixtures / "golem" / "wasm" / "rust-echo.wasm")
    ids = {**seeds.values, **seeds.plugin_values}
    with httpx.Client(base_url=fuzz_stack.base_url, timeout=60, headers=bearer(ALICE)) as alice:
        dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
        assert alice.post("/v1/packages", content=dar, headers={
            "Content-Type": "application/octet-stream"}).status_code == 200
        ids["package_id"] = alice.get("/v1/packages").json()["result"][:2]
        created = alice.post("/v1/create", json={"templateId": "Iou:Iou", "payload": IOU})
        contract = created.json()["result"]["contractId"]
    account = ids["account_id"][-1]
    return World(fuzz_stack.root_token, ids, bodies={
        "/v1/projects": {"name": "p", "ownerAccountId": "root", "description": "d"},
        "/v1/accounts": {"name": "n", "email": "n@example.com"},
        "/v1/accounts/{account_id}": {"name": "n", "email": "n@example.com"},
        "/v1/accounts/{account_id}/tokens": {"expiresAt": "2100-01-01T00:00:00Z"},
        "/v1/projects/{project_id}/grants": {"granteeAccountId": account,
                                             "projectActions": ["ViewComponent"]},
        "/v1/project-policies": {"name": "p", "projectActions": {"actions": ["ViewComponent"]}},
        "/v1/create": {"templateId": "Iou:Iou", "payload": IOU},
        "/v1/query": {"templateIds": ["Iou:Iou"], "query": {"currency": "USD"}},
        "/v1/fetch": {"contractId": contract},
        "/v1/exercise": {"templateId": "Iou:Iou", "contractId": contract,
                         "choice": "Iou_Split", "argument": {"splitAmount": "1.0"}},
        "/v1/create-and-exercise": {"templateId": "Iou:Iou", "payload": IOU,
                                    "choice": "Iou_Split", "argument": {"splitAmount": "1.0"}},
        "/v1/parties/allocate": {"identifierHint": "h", "displayName": "H"},
        "/v1/components/{component_id}/latest/plugins/installs": {
            "name": "seed-plugin", "version": "1", "priority": 1, "parameters": {}},
        "/v1/projects/{project_id}/plugins/installs": {
            "name": "seed-plugin", "version": "1", "priority": 1, "parameters": {}},
    })


@pytest.fixture(scope="module")
def judge(fuzz_stack: RunningStack) -> Iterator[Judge]:
    with httpx.Client(base_url=fuzz_stack.base_url, timeout=30) as client:
        redis = syncredis.Redis.from_url(fuzz_stack.redis_url, socket_timeout=30)
        yield Judge(client, redis, Report())
        redis.close()


def _reported(name: str, judge: Judge) -> Report:
    """Start a fresh report for this test (the judge's report is per test)."""
    judge.report = REPORTS[name] = Report()
    return judge.report


def _assert_kept(report: Report) -> None:
    assert not report.failures, "\n".join(report.failures[:20])


# ---------------------------------------------------------------------------- binary inputs
def test_damaged_wasm_dar_and_zip_uploads(
    world: World, judge: Judge, shared_fixtures: Path
) -> None:
    report = _reported("binaries", judge)
    inputs = fixture_inputs(shared_fixtures)
    rng = random.Random(None if not DERANDOMIZE else 8)
    root, component = bearer(world.root_token), world.ids["component_id"][0]
    for n in range(BINARIES):
        match n % 4:
            case 0:  # a new component from a damaged binary
                wasm = damaged(rng.choice(inputs["wasm"]), rng)
                judge.send("POST", "/v1/components", what="damaged wasm", headers=root, files={
                    "query": (None, json.dumps({"componentName": f"fz-{n}-{rng.random()}"}),
                              "application/json"),
                    "component": ("c.wasm", wasm, "application/wasm")})
            case 1:  # a damaged binary as a new version
                judge.send("PUT", f"/v1/components/{component}/upload", what="damaged wasm",
                           content=damaged(rng.choice(inputs["wasm"]), rng),
                           headers={**root, "Content-Type": "application/octet-stream"})
            case 2:  # a damaged DAR
                judge.send("POST", "/v1/packages", what="damaged dar",
                           content=damaged(rng.choice(inputs["dar"]), rng),
                           headers={**bearer(ALICE), "Content-Type": "application/octet-stream"})
            case _:  # a damaged initial-files zip beside a good binary
                judge.send("POST", f"/v1/components/{component}/updates", what="damaged zip",
                           headers=root, files={
                               "component": ("c.wasm", inputs["wasm"][0], "application/wasm"),
                               "files": ("f.zip", damaged(files_zip(rng), rng),
                                         "application/zip")})
    _assert_kept(report)


# ------------------------------------------------------------------ the OpenAPI documents
@pytest.mark.parametrize("document", [GOLEM_DOCUMENT, OPENAPI_DOCUMENT], ids=["golem", "cairn"])
def test_schemathesis_negative_cases(world: World, judge: Judge, document: Path,
                                     fuzz_stack: RunningStack) -> None:
    """Inputs each document says are wrong, for every operation it describes."""
    report = _reported(f"schemathesis-{document.stem}", judge)
    schema = schemathesis.openapi.from_path(document)
    if document == GOLEM_DOCUMENT:  # the families Cairn serves (not workers, API gateway)
        schema = schema.include(tag=GOLEM_FAMILIES)
    strategy = schema.as_strategy(generation_mode=GenerationMode.NEGATIVE)

    @settings(max_examples=SCHEMA_EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
              database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def call(case: Any) -> None:
        ledger = case.path.startswith(LEDGER_PATHS)
        headers = bearer(ALICE if ledger else world.root_token)

        def send() -> tuple[int, str]:
            reply = case.call(base_url=fuzz_stack.base_url, headers=headers, timeout=30)
            return reply.status_code, reply.text

        judge.check(f"{case.method} {case.formatted_path[:120]} schemathesis", send)

    call()
    _assert_kept(report)


# ---------------------------------------------------------------------------------- REST paths
def test_mutated_requests_over_every_rest_path(world: World, judge: Judge) -> None:
    report = _reported("rest", judge)
    every = targets()
    # Each binding gets its share, so every one is fuzzed however small the budget.
    share = -(-REQUESTS // len(every))
    for target in every:

        @settings(max_examples=share, deadline=None, derandomize=DERANDOMIZE, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(request=hostile_requests(world, [target]))
        def call(request: tuple[str, str, dict[str, Any], str]) -> None:
            method, path, kwargs, what = request
            judge.send(method, path, what=what, **kwargs)

        call()
    assert report.requests >= len(every)
    _assert_kept(report)


# ----------------------------------------------------------------------------- slow senders
def _drip(port: int, head: bytes, drip: bytes, interval: float, limit: float,
          closed_after: list[float]) -> None:
    """Send `head`, then `drip` every `interval` until the server answers or closes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as conn:
        conn.sendall(head)
        while time.monotonic() - started < limit:
            readable, _, _ = select.select([conn], [], [], interval)
            if readable:
                break
            try:
                conn.sendall(drip)
            except OSError:
                break
        closed_after.append(time.monotonic() - started)


def test_slow_drip_connections_are_cut_and_others_keep_their_latency(
    fuzz_stack: RunningStack, world: World
) -> None:
    port = int(fuzz_stack.base_url.rsplit(":", 1)[1])
    token = world.root_token.encode()
    heads = [
        # headers that never end: cut by the headers timeout (2 s)
        (b"GET /v1/projects HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n", 2),
        # a JSON body that never ends: cut by the request timeout (4 s)
        (b"POST /v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
         b"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", b" ", 4),
        # an upload that never ends: cut by the transfer timeout (6 s)
        (b"POST /v1/components HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
         b"\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 10000000\r\n\r\n"
         b'--B\r\nContent-Disposition: form-data; name="component"; filename="c.wasm"\r\n\r\n',
         b"\0", 6),
    ]

    def latencies(count: int) -> list[float]:
        out = []
        with httpx.Client(base_url=fuzz_stack.base_url, timeout=30,
                          headers=bearer(world.root_token)) as client:
            for _ in range(count):
                started = time.monotonic()
                assert client.get("/v1/projects/default").status_code == 200
                out.append(time.monotonic() - started)
        return out

    baseline = statistics.median(latencies(15))
    closed: dict[int, list[float]] = {limit: [] for _, _, limit in heads}
    threads = []
    for n in range(DRIPS):
        head, drip, limit = heads[n % len(heads)]
        thread = threading.Thread(target=_drip, args=(port, head, drip, 1.0, limit + 20,
                                                      closed[limit]), daemon=True)
        thread.start()
        threads.append(thread)
    time.sleep(1)
    during = latencies(15)
    for thread in threads:
        thread.join(60)
    DRIP_FIGURES.update({
        "connections": DRIPS,
        "closed_after_seconds": {f"cut at {limit} s": [round(min(t), 2), round(max(t), 2)]
                                 for limit, t in closed.items() if t},
        "unloaded_median_ms": round(baseline * 1000, 1),
        "during_median_ms": round(statistics.median(during) * 1000, 1),
        "during_max_ms": round(max(during) * 1000, 1),
    })
    slack = 3.0  # a loaded machine's scheduling, plus one drip interval
    for limit, times in closed.items():
        assert len(times) == sum(1 for n in range(DRIPS) if heads[n % 3][2] == limit)
        assert max(times) < limit + slack, (limit, sorted(times)[-5:])
    assert statistics.median(during) < max(5 * baseline, baseline + 0.2), (baseline, during)
    assert max(during) < 2.0
