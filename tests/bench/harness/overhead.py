"""`make bench-overhead` (`python -m tests.bench.harness.overhead`): what metrics cost a create.

Two stacks run side by side, alike but for `CAIRN_METRICS_ENABLED` (on: every service records the
standard gRPC server metrics and its domain metrics; off: none); tracing is disabled in both, as
by default, so the interceptor's "is tracing on?" check is in both. Short wrk runs of the create
benchmark (POST /v1/create, 1 connection) alternate between them, in ABBA order so that a trend
in the machine's load falls on both alike. Each pair gives the relative difference of the mean
latency and of the services' CPU time per request; the figures are the medians of those paired
differences, which a busy shared machine disturbs far less than any single run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.runtime.server import CAIRN_SERVICES
from cairn.stack.launcher import REPO_ROOT

from . import load, procstat, report
from . import stack as bench_stack
from .__main__ import SHARED_FIXTURES
from .scenarios import Bench, iou, wrk_post

LIMIT = 0.05  # issue 13: metrics and disabled tracing cost less than 5 %


@dataclass(frozen=True)
class Run:
    mean_ms: float
    p50_ms: float
    requests: int
    service_cpu_ms: float  # the four services' CPU per request


def measure(bench: Bench, seconds: float) -> Run:
    script = wrk_post("/v1/create", json.dumps({"templateId": "Iou:Iou",
                                                "payload": iou("Alice")}), bench.alice)
    pids = {k: v for k, v in bench.stack.pids().items() if k in CAIRN_SERVICES}
    meter = procstat.CpuMeter(pids)
    meter.start()
    done = load.wrk(bench.url("/v1/create"), connections=1, seconds=seconds, script=script)
    spent = meter.stop()
    cpu = sum(s for name, s in spent.items() if name in CAIRN_SERVICES)
    return Run(done.mean_ms, done.p50_ms, done.requests, cpu * 1000 / done.requests)


def relative(on: float, off: float) -> float:
    return (on - off) / off


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.harness.overhead",
                                     description=__doc__)
    parser.add_argument("--pairs", type=int, default=20, help="ABBA rounds (2 pairs each)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each run")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "bench-overhead")
    args = parser.parse_args(argv)

    load.require_tools()
    started, load_before = time.time(), procstat.load_average()
    args.work.mkdir(parents=True, exist_ok=True)
    stacks = {
        "on": bench_stack.start(args.work / "on", {"CAIRN_METRICS_ENABLED": "true"}),
        "off": bench_stack.start(args.work / "off", {"CAIRN_METRICS_ENABLED": "false"}),
    }
    benches = {k: Bench(s, args.seconds, SHARED_FIXTURES, args.work) for k, s in stacks.items()}
    runs: dict[str, list[Run]] = {"on": [], "off": []}
    try:
        for bench in benches.values():
            bench.upload_dar()
            measure(bench, 1)  # warm-up: connections, caches, the engine's first command
        for round_ in range(args.pairs):
            order = ("on", "off", "off", "on") if round_ % 2 == 0 else ("off", "on", "on", "off")
            for key in order:
                runs[key].append(measure(benches[key], args.seconds))
            print(f"  round {round_ + 1}/{args.pairs}: on {runs['on'][-1].mean_ms:.3f} ms, "
                  f"off {runs['off'][-1].mean_ms:.3f} ms", flush=True)
    finally:
        for bench_stack_ in stacks.values():
            bench_stack_.stop()

    pairs = list(zip(runs["on"], runs["off"], strict=True))
    latency = [relative(a.mean_ms, b.mean_ms) for a, b in pairs]
    cpu = [relative(a.service_cpu_ms, b.service_cpu_ms) for a, b in pairs]
    data: dict[str, Any] = {
        "environment": report.environment(load_before, procstat.load_average(), args.seconds,
                                          time.time() - started),
        "method": __doc__,
        "pairs": len(pairs),
        "seconds_per_run": args.seconds,
        "median_latency_overhead": statistics.median(latency),
        "median_service_cpu_overhead": statistics.median(cpu),
        "latency_overhead_quartiles": statistics.quantiles(latency, n=4),
        "median_mean_ms": {k: statistics.median(r.mean_ms for r in v) for k, v in runs.items()},
        "median_p50_ms": {k: statistics.median(r.p50_ms for r in v) for k, v in runs.items()},
        "median_service_cpu_ms": {k: statistics.median(r.service_cpu_ms for r in v)
                                  for k, v in runs.items()},
        "limit": LIMIT,
    }
    data["holds"] = data["median_latency_overhead"] < LIMIT
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(data, indent=1) + "\n")
    print(markdown(data))
    return 0 if data["holds"] else 1


def markdown(data: dict[str, Any]) -> str:
    env = data["environment"]
    q1, _, q3 = data["latency_overhead_quartiles"]
    return "\n".join([
        f"metrics on vs off, ledger create (1 connection), {data['pairs']} pairs of "
        f"{data['seconds_per_run']:.0f} s runs; {env['date']}, commit {env['commit']}, "
        f"load {env['load_average_before'][0]:.1f} -> {env['load_average_after'][0]:.1f}",
        f"  mean latency: on {data['median_mean_ms']['on']:.3f} ms, "
        f"off {data['median_mean_ms']['off']:.3f} ms",
        f"  services' CPU per request: on {data['median_service_cpu_ms']['on']:.3f} ms, "
        f"off {data['median_service_cpu_ms']['off']:.3f} ms",
        f"  median paired latency overhead {data['median_latency_overhead']:+.2%} "
        f"(quartiles {q1:+.2%} .. {q3:+.2%}); "
        f"services' CPU {data['median_service_cpu_overhead']:+.2%}",
        f"  below {data['limit']:.0%}: {'yes' if data['holds'] else 'NO'}",
    ])


if __name__ == "__main__":
    sys.exit(main())
