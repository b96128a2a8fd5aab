"""Acceptance: a stream client that disconnects, misses creates and archives, and resumes at its
last offset ends with exactly the active contracts `/v1/query` returns; the same from every offset
it saw. Through Envoy, on two ledger replicas sharing one Redis (the session's stack is replica A
behind its Envoy; replica B is a second `python -m cairn.ledger` behind a second Envoy), with
random creates, splits, merges and transfers by several clients.

A bounded property test: one seeded random run (`CAIRN_TEST_SEED` repeats one); every client picks
a replica at random for each command, query and (re)connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from cairn.auth.ledger_jwt import encode_jwt_hs256
from cairn.stack.envoy_config import EnvoyLayout, render
from cairn.stack.launcher import DESCRIPTOR, REPO_ROOT, envoy_binary, free_port

from .conftest import RunningStack

pytestmark = pytest.mark.e2e

ROUNDS = 14
WAIT = 20.0
RESUME_CONCURRENCY = 8


@dataclass
class Replica:
    base_url: str

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/v1/stream/query"


def _wait_until(ready: Any, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 90
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def replicas(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory,
             shared_fixtures: Path) -> Iterator[list[Replica]]:
    """The stack's Envoy (replica A) and a second ledger process behind a second Envoy."""
    work = tmp_path_factory.mktemp("replica-b")
    grpc_port, ws_port, http_port, admin_port = (free_port() for _ in range(4))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update({
        "CAIRN_RUN_DIR": str(stack.run_dir),  # the same blob directory
        "CAIRN_REDIS_URL": stack.redis_url,
        "CAIRN_INTERNAL_SECRET": (stack.run_dir / "internal-secret").read_text().strip(),
        "CAIRN_LEDGER_GRPC_PORT": str(grpc_port),
        "CAIRN_LEDGER_WS_PORT": str(ws_port),
        "CAIRN_LOG_LEVEL": "warning",
    })
    ledger_log = work / "ledger.log"
    with ledger_log.open("wb") as out:
        ledger = subprocess.Popen([sys.executable, "-m", "cairn.ledger"], cwd=REPO_ROOT,
                                  env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    envoy = None
    try:
        ports = stack.grpc_ports
        layout = EnvoyLayout(
            bind_host="127.0.0.1", http_port=http_port, admin_port=admin_port,
            descriptor_path=DESCRIPTOR,
            upstreams={"auth": ("127.0.0.1", ports["auth"]),
                       "project": ("127.0.0.1", ports["project"]),
                       "component": ("127.0.0.1", ports["component"]),
                       "ledger": ("127.0.0.1", grpc_port)},
            ledger_ws=("127.0.0.1", ws_port))
        config = work / "envoy.yaml"
        config.write_text(render(layout))
        envoy_log = work / "envoy.log"
        with envoy_log.open("wb") as out:
            envoy = subprocess.Popen([envoy_binary(), "-c", str(config), "--disable-hot-restart",
                                      "--concurrency", "1", "-l", "warning"],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        _wait_until(lambda: _http_ok(f"http://127.0.0.1:{admin_port}/ready"), envoy, envoy_log,
                    "envoy B")
        b = Replica(f"http://127.0.0.1:{http_port}")
        # Replica B serves once a query through its Envoy answers (it loads the packages the
        # stack's ledger already has, and builds its query store, before it listens).
        _wait_until(lambda: _answers(b), ledger, ledger_log, "ledger replica B")
        with httpx.Client(base_url=stack.base_url, timeout=60) as client:
            dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
            uploaded = client.post("/v1/packages", content=dar, headers={
                "Authorization": f"Bearer {token('Uploader')}",
                "Content-Type": "application/octet-stream"})
            assert uploaded.status_code == 200, uploaded.text
        yield [Replica(stack.base_url), b]
    finally:
        for process in (envoy, ledger):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()


def _answers(replica: Replica) -> bool:
    try:
        reply = httpx.get(f"{replica.base_url}/v1/parties", timeout=2,
                          headers={"Authorization": f"Bearer {token('Probe')}"})
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


def token(party: str) -> str:
    claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger",
                                              "applicationId": "history-test",
                                              "actAs": [party]}}
    return encode_jwt_hs256(claims, "sandbox mode does not check this")


# ---------------------------------------------------------------------- the stream client
State = dict[str, Any]  # contract id -> active contract JSON


def apply(state: State, events: list[dict[str, Any]]) -> None:
    """What `@daml/ledger` does with a block: add created, drop archived."""
    for event in events:
        if "created" in event:
            state[event["created"]["contractId"]] = event["created"]
        else:
            state.pop(event["archived"]["contractId"], None)


@dataclass
class Observer:
    """A client following its party's Ious and incoming transfers of one currency, like
    `streamQueries` does: it keeps the state and the last offset, and resumes after a
    disconnect."""

    party: str
    request: list[dict[str, Any]]
    state: State = field(default_factory=dict)
    offset: str | None = None
    seen: dict[str, State] = field(default_factory=dict)  # every offset seen -> the state there
    ws: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    connections: int = 0

    async def connect(self, replica: Replica) -> None:
        self.ws = await connect(replica.ws_url, subprotocols=[  # type: ignore[list-item]
            f"jwt.token.{token(self.party)}", "daml.ws.auth"], open_timeout=WAIT)
        if self.offset is not None:
            await self.ws.send(json.dumps({"offset": self.offset}))
        await self.ws.send(json.dumps(self.request))
        self.connections += 1
        self.reader = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            assert "errors" not in frame, frame
            apply(self.state, frame["events"])
            if "offset" in frame and frame["offset"] is not None:
                self.offset = frame["offset"]
                self.seen[frame["offset"]] = dict(self.state)

    async def disconnect(self) -> None:
        assert self.ws is not None and self.reader is not None
        await self.ws.close()
        await asyncio.wait_for(self.reader, WAIT)
        self.ws = self.reader = None

    async def wait_for(self, contract_id: str) -> None:
        deadline = asyncio.get_running_loop().time() + WAIT
        while contract_id not in self.state:
            assert self.reader is not None and not self.reader.done(), "the stream ended"
            assert asyncio.get_running_loop().time() < deadline, f"{contract_id} never came"
            await asyncio.sleep(0.02)


async def resumed_state(replica: Replica, observer: Observer, offset: str) -> State:
    """A fresh client holding the state `observer` had at `offset`, resumed from there until
    the live marker."""
    state = dict(observer.seen[offset])
    async with connect(replica.ws_url, subprotocols=[  # type: ignore[list-item]
            f"jwt.token.{token(observer.party)}", "daml.ws.auth"], open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"offset": offset}))
        await ws.send(json.dumps(observer.request))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert "errors" not in frame, (offset, frame)
            apply(state, frame["events"])
            if not frame["events"]:  # the live marker: everything up to it was sent
                return state


# ---------------------------------------------------------------------- the test
class Ledger:
    def __init__(self, client: httpx.AsyncClient, replicas: list[Replica],
                 rng: random.Random) -> None:
        self.client = client
        self.replicas = replicas
        self.rng = rng
        self.end = ""

    def replica(self) -> Replica:
        return self.rng.choice(self.replicas)

    async def post(self, path: str, body: Any, party: str) -> Any:
        reply = await self.client.post(f"{self.replica().base_url}{path}", json=body,
                                       headers={"Authorization": f"Bearer {token(party)}"})
        assert reply.status_code == 200, (path, body, reply.text)
        result = reply.json()["result"]
        if isinstance(result, dict) and "completionOffset" in result:
            self.end = max(self.end, result["completionOffset"])
        return result

    async def active(self, observer: Observer) -> State:
        """What `/v1/query` returns for the observer's queries, by contract id."""
        found: State = {}
        for element in observer.request:
            for contract in await self.post("/v1/query", element, observer.party):
                found[contract["contractId"]] = contract
        return found


async def step(ledger: Ledger, party: str, others: list[str], currency: str) -> None:
    """One random command by `party` on its own contracts (as a query on a random replica shows
    them, which also checks that it reflects the party's earlier commands)."""
    rng = ledger.rng
    mine = [c for c in await ledger.post("/v1/query", {"templateIds": ["Iou:Iou"],
                                                        "query": {"currency": currency}}, party)
            if c["payload"]["owner"] == party]
    incoming = await ledger.post("/v1/query", {"templateIds": ["Iou:IouTransfer"],
                                               "query": {"newOwner": party}}, party)
    choice = rng.random()
    if incoming and choice < 0.3:
        await ledger.post("/v1/exercise", {
            "templateId": "Iou:IouTransfer", "contractId": rng.choice(incoming)["contractId"],
            "choice": "IouTransfer_Accept", "argument": {}}, party)
        return
    if not mine or choice < 0.45:
        created = await ledger.post("/v1/create", {"templateId": "Iou:Iou", "payload": {
            "issuer": party, "owner": party, "currency": currency,
            "amount": str(rng.randint(2, 500)), "observers": []}}, party)
        # Read your writes, on the other replica as well.
        for replica in ledger.replicas:
            reply = await ledger.client.post(
                f"{replica.base_url}/v1/fetch", json={"contractId": created["contractId"]},
                headers={"Authorization": f"Bearer {token(party)}"})
            assert reply.json()["result"] is not None, replica
        return
    iou = rng.choice(mine)
    same_issuer = [c for c in mine if c["contractId"] != iou["contractId"]
                   and c["payload"]["issuer"] == iou["payload"]["issuer"]]
    amount = float(iou["payload"]["amount"])
    if choice < 0.65 and amount > 1:
        await ledger.post("/v1/exercise", {
            "templateId": "Iou:Iou", "contractId": iou["contractId"], "choice": "Iou_Split",
            "argument": {"splitAmount": str(round(rng.uniform(0.1, amount - 0.1), 2))}}, party)
    elif choice < 0.8 and same_issuer:
        await ledger.post("/v1/exercise", {
            "templateId": "Iou:Iou", "contractId": iou["contractId"], "choice": "Iou_Merge",
            "argument": {"otherCid": rng.choice(same_issuer)["contractId"]}}, party)
    else:
        await ledger.post("/v1/exercise", {
            "templateId": "Iou:Iou", "contractId": iou["contractId"], "choice": "Iou_Transfer",
            "argument": {"newOwner": rng.choice(others)}}, party)


async def test_resumed_streams_end_with_the_active_contracts_on_two_replicas(
    replicas: list[Replica],
) -> None:
    seed = int(os.environ.get("CAIRN_TEST_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    currency = f"H{run}"
    parties = [f"Hist{run}{name}" for name in ("A", "B", "C")]
    observers = [Observer(party, [
        {"templateIds": ["Iou:Iou"], "query": {"currency": currency}},
        {"templateIds": ["Iou:IouTransfer"], "query": {"iou": {"currency": currency}}},
    ]) for party in parties]
    async with httpx.AsyncClient(timeout=WAIT) as client:
        ledger = Ledger(client, replicas, rng)
        try:
            for observer in observers:
                await observer.connect(ledger.replica())
            for _ in range(ROUNDS):
                # Clients drop their streams now and then and come back later, anywhere.
                for observer in observers:
                    if observer.ws is not None and rng.random() < 0.3:
                        await observer.disconnect()
                    elif observer.ws is None and rng.random() < 0.5:
                        await observer.connect(ledger.replica())
                await asyncio.gather(*(step(ledger, party, [p for p in parties if p != party],
                                            currency) for party in parties))
            # A last create per party, which each stream shows after everything before it.
            for observer in observers:
                if observer.ws is None:
                    await observer.connect(ledger.replica())
            sentinels = [await ledger.post("/v1/create", {"templateId": "Iou:Iou", "payload": {
                "issuer": p, "owner": p, "currency": currency, "amount": "1",
                "observers": []}}, p) for p in parties]
            for observer, sentinel in zip(observers, sentinels, strict=True):
                await observer.wait_for(sentinel["contractId"])
            for observer in observers:
                expected = await ledger.active(observer)
                assert observer.state == expected, f"seed {seed}, {observer.party}"
                assert observer.connections >= 1
                # Resuming from every offset the client saw ends in the same state.
                offsets = sorted(observer.seen)
                for first in range(0, len(offsets), RESUME_CONCURRENCY):
                    batch = offsets[first:first + RESUME_CONCURRENCY]
                    states = await asyncio.gather(*(
                        resumed_state(ledger.replica(), observer, offset) for offset in batch))
                    for offset, state in zip(batch, states, strict=True):
                        assert state == expected, f"seed {seed}, {observer.party} at {offset}"
        finally:
            for observer in observers:
                if observer.ws is not None:
                    await observer.disconnect()
    assert sum(len(o.seen) for o in observers) > ROUNDS, "the streams saw the commits"
