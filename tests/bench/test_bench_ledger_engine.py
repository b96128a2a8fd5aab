"""Benchmarks of the DAML-LF engine: DAR load time, Iou create latency and choice exercise
latency (Iou_Transfer, Iou_Split), plus a compute-heavy choice (InefficientFibonacci).

Run with `.venv/bin/pytest -m bench tests/bench/test_bench_ledger_engine.py -s`; numbers are
printed and recorded in docs/ledger-engine.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cairn.ledger.codec import JsonCodec
from cairn.ledger.lf import dar as dar_module
from cairn.ledger.lf.ast import Identifier, TCon
from cairn.ledger.lf.dar import load_dar
from cairn.ledger.lf.engine import Contract, Engine, Transaction
from cairn.ledger.lf.value import value_key

pytestmark = pytest.mark.bench

IOU = {"issuer": "Bank", "owner": "Alice", "currency": "USD", "amount": "100.25",
       "observers": ["Carol"]}


class MemoryLedger:
    def __init__(self) -> None:
        self.contracts: dict[str, Contract] = {}
        self.keys: dict[tuple[Identifier, Any], str] = {}

    def lookup_contract(self, contract_id: str) -> Contract | None:
        return self.contracts.get(contract_id)

    def lookup_key(self, template_id: Identifier, key: Any) -> str | None:
        return self.keys.get((template_id, value_key(key)))

    def commit(self, tx: Transaction) -> Transaction:
        for contract in tx.archived:
            del self.contracts[contract.contract_id]
        for contract in tx.created:
            self.contracts[contract.contract_id] = contract
        return tx


def measure(label: str, runs: int, action: Callable[[], object]) -> dict[str, float]:
    samples = []
    cpu_start = time.process_time()
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    # CPU time is reported too: on a shared machine wall-clock time includes waiting for a core.
    cpu_mean = (time.process_time() - cpu_start) * 1000 / runs
    samples.sort()
    stats = {
        "cpu_mean_ms": cpu_mean,
        "mean_ms": statistics.fmean(samples),
        "p50_ms": samples[len(samples) // 2],
        "p95_ms": samples[int(len(samples) * 0.95) - 1],
        "max_ms": samples[-1],
    }
    print(f"{label:<44} runs={runs:<5} " + " ".join(f"{k}={v:.2f}" for k, v in stats.items()))
    return stats


def test_bench_dar_load(shared_fixtures: Path) -> None:
    for name in ["model-tests-1.15.dar", "semantic-tests-1.15.dar", "test-1.15.dar"]:
        data = (shared_fixtures / "daml" / name).read_bytes()

        def cold_load(payload: bytes = data) -> None:
            dar_module._PACKAGE_CACHE.clear()
            load_dar(payload)

        measure(f"load_dar {name} (cold cache)", 5, cold_load)
        def warm_load(payload: bytes = data) -> None:
            load_dar(payload)

        measure(f"load_dar {name} (packages cached)", 5, warm_load)


def test_bench_iou_commands(shared_fixtures: Path) -> None:
    dar = load_dar((shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes())
    engine = Engine(dar.packages.values())
    codec = JsonCodec(engine.packages)
    ledger = MemoryLedger()
    iou_id = Identifier(dar.main_package_id, "Iou", "Iou")
    transfer_type = engine.choice(iou_id, "Iou_Transfer").arg_type
    split_type = engine.choice(iou_id, "Iou_Split").arg_type

    def create() -> Contract:
        argument = codec.decode(TCon(iou_id), IOU)
        return ledger.commit(engine.create(iou_id, argument, act_as=["Bank", "Alice"],
                                           ledger=ledger)).created[0]

    first = time.perf_counter()
    create()
    cold_ms = (time.perf_counter() - first) * 1000
    print(f"{'first create Iou:Iou (cold value cache)':<44} {cold_ms:.2f} ms")
    measure("create Iou:Iou (JSON decode + create)", 500, create)

    pool = [create() for _ in range(600)]

    def transfer() -> None:
        contract = pool.pop()
        ledger.commit(engine.exercise(contract.contract_id, "Iou_Transfer",
                                      codec.decode(transfer_type, {"newOwner": "Bob"}),
                                      act_as=["Alice"], ledger=ledger))

    measure("exercise Iou_Transfer", 300, transfer)

    def split() -> None:
        contract = pool.pop()
        ledger.commit(engine.exercise(contract.contract_id, "Iou_Split",
                                      codec.decode(split_type, {"splitAmount": "30.5"}),
                                      act_as=["Alice"], ledger=ledger))

    measure("exercise Iou_Split", 250, split)

    def create_and_exercise() -> None:
        ledger.commit(engine.create_and_exercise(
            iou_id, codec.decode(TCon(iou_id), IOU), "Iou_Transfer",
            codec.decode(transfer_type, {"newOwner": "Bob"}), act_as=["Bank", "Alice"],
            ledger=ledger))

    measure("create_and_exercise Iou_Transfer", 300, create_and_exercise)


def test_bench_fibonacci(shared_fixtures: Path) -> None:
    dar = load_dar((shared_fixtures / "daml" / "benchtool-tests-1.15.dar").read_bytes())
    engine = Engine(dar.packages.values())
    codec = JsonCodec(engine.packages)
    ledger = MemoryLedger()
    fib_id = Identifier(dar.main_package_id, "Bench", "InefficientFibonacci")
    contract = ledger.commit(engine.create(
        fib_id, codec.decode(TCon(fib_id), {"owner": "Alice"}), act_as=["Alice"])).created[0]
    arg_type = engine.choice(fib_id, "InefficientFibonacci_NcCompute").arg_type
    for n in (10, 15, 20):

        def compute(value: int = n) -> None:
            engine.exercise(contract.contract_id, "InefficientFibonacci_NcCompute",
                            codec.decode(arg_type, {"value": value}), act_as=["Alice"],
                            ledger=ledger)

        measure(f"InefficientFibonacci_NcCompute value={n}", 3, compute)
