"""`python -m tests.bench.harness`: run every scenario once and write the report (make bench)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn.stack.launcher import REPO_ROOT

from . import ledger_history, load, procstat, profiling, report
from . import stack as bench_stack
from .scenarios import LATENCY_CONNECTIONS, Bench, Result

SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
# Scenarios whose request path the profile pass takes apart, with their paths as Envoy logs them.
PROFILED = {"rest_cheapest": "/v1/projects/default", "ledger_create": "/v1/create"}


def scenario_order(bench: Bench) -> list[tuple[str, Callable[[], Result | None]]]:
    return [
        ("floor_http", bench.floor_http),
        ("floor_grpc", bench.floor_grpc),
        ("echo_direct", bench.echo_direct),
        ("rest_cheapest", bench.rest_cheapest),
        ("grpc_cheapest", bench.grpc_cheapest),
        ("component_create", bench.component_create),
        ("upload_50mb", bench.upload_50mb),
        ("ledger_create", bench.ledger_create),
        ("ledger_create_grpc", bench.ledger_create_grpc),
        ("ledger_exercise", bench.ledger_exercise),
        ("ledger_create_and_exercise", bench.ledger_create_and_exercise),
        ("ledger_query", bench.ledger_query),
        ("ledger_query_5k", lambda: ledger_history.query_5k(bench)),
        ("ledger_query_5k_all", lambda: ledger_history.query_5k_all(bench)),
        ("ledger_query_100k", lambda: ledger_history.query_100k(bench)),
        ("ledger_rebuild", lambda: ledger_history.rebuild(bench)),
        ("ws_fanout", bench.ws_fanout),
    ]


def profile(bench: Bench, key: str, path: str, out: Path) -> dict[str, Any]:
    """One more latency run of a scenario with py-spy on every service and Envoy's timing log."""
    run = bench.runs[key]
    pids = bench.stack.pids()
    log = bench.stack.timing_log
    offset = log.stat().st_size if log.exists() else 0  # Envoy keeps the file open: no unlink
    bench.stack.set_timing_log(True)
    recorder = profiling.Recorder(pids, out / key, bench.seconds)
    meter = procstat.CpuMeter(pids)
    recorder.start()
    time.sleep(0.5)  # py-spy attaches
    meter.start()
    measured = run(LATENCY_CONNECTIONS, bench.seconds)
    spent = meter.stop()
    samples = recorder.finish()
    bench.stack.set_timing_log(False)
    per_request = 1000 / measured.requests
    cpu_ms = {name: s * per_request for name, s in spent.items() if s > 0}
    main_ms = {name: s * per_request for name, s in meter.main_threads.items() if s > 0}
    categories = {}
    for name, folded in samples.items():
        if folded and name in main_ms:
            shares = profiling.category_shares(folded)
            categories[name] = {cat: share * main_ms[name] for cat, share in shares.items()}
    return {
        "latency": measured.to_json(),
        "cpu_ms_per_request": cpu_ms,
        "main_thread_cpu_ms_per_request": main_ms,
        "categories_ms": categories,
        "top_functions": {name: profiling.top_functions(folded)
                          for name, folded in samples.items() if folded},
        "envoy_phases_ms": profiling.envoy_phases(log, offset, path),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.harness", description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each load run")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks",
                        help="where report.md and report.json go")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "bench",
                        help="scratch: the stack's run dir, logs, profiles")
    parser.add_argument("--only", default="", help="comma-separated scenario keys")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile pass")
    args = parser.parse_args(argv)

    load.require_tools()
    started = time.time()
    load_before = procstat.load_average()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    print(f"cairn bench: starting the stack in {args.work}", flush=True)
    stack = bench_stack.start(args.work / "run")
    bench = Bench(stack, args.seconds, SHARED_FIXTURES, args.work)
    wanted = set(filter(None, args.only.split(",")))
    results: list[Result] = []
    profiles: dict[str, Any] = {}
    try:
        bench.upload_dar()
        for key, scenario in scenario_order(bench):
            if wanted and key not in wanted:
                continue
            print(f"  {key} ...", end="", flush=True)
            result = scenario()
            if result is not None:
                results.append(result)
                print(" " + report.one_line(result), flush=True)
        if not args.no_profile and profiling.Recorder.binary():
            for key, path in PROFILED.items():
                if key in bench.runs:
                    print(f"  profile {key} ...", flush=True)
                    profiles[key] = profile(bench, key, path, args.work / "profiles")
    finally:
        stack.stop()
    meta = report.environment(load_before, procstat.load_average(), args.seconds,
                              time.time() - started)
    data = report.to_json(meta, results, profiles)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / "report.md").write_text(report.markdown(data))
    print(f"cairn bench: {args.out / 'report.md'} written in {time.time() - started:.0f} s")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
