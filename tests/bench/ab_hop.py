"""A/B: the cheapest authenticated REST call of two versions of Cairn, measured in the same run.

`python -m tests.bench.ab_hop --baseline <git rev> [--candidate <git rev>]` starts both versions'
stacks side by side (as `tests.bench.ab_ledger_create` does: `git archive`, the revision's own
launcher, services and Envoy config, on free ports) and alternates between them round by round:
each round is `--seconds` of wrk (one connection) on `GET /v1/projects/default` with the root
token, through Envoy (ext_authz `Check` in the auth service, then the project service, one Redis
GET). It prints each round's p50, the median of the round p50s, and the CPU time the auth and
project services, Envoy and Redis spent per request (from /proc: the figure a busy machine
distorts least; a service hop's cost is its CPU per request).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

from cairn.stack.launcher import REPO_ROOT
from tests.bench.ab import Round, alternate, baseline_and_candidate, running
from tests.bench.harness import load

PARTS = {"auth": "cairn.auth", "project": "cairn.project", "redis": "redis-server",
         "envoy": "envoy"}
ROOT_TOKEN = str(uuid.uuid4())
SCRIPT = f'wrk.headers["Authorization"] = "Bearer {ROOT_TOKEN}"\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ab_hop", description=__doc__)
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--candidate", default="", help="git revision (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "ab-hop")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    baseline, candidate = baseline_and_candidate(args.baseline, args.candidate, args.work, PARTS)
    env = {"CAIRN_LOG_LEVEL": args.log_level, "CAIRN_ROOT_TOKEN": ROOT_TOKEN}
    with ExitStack() as stacks:
        versions = [stacks.enter_context(running(v, args.work, env))
                    for v in (baseline, candidate)]
        for version in versions:  # warm-up: caches filled, code paths hot
            load.wrk(f"{version.base_url}/v1/projects/default", connections=4, seconds=1,
                     script=SCRIPT)

        def measure(index: int) -> Round:
            measured = load.wrk(f"{versions[index].base_url}/v1/projects/default",
                                connections=1, seconds=args.seconds, script=SCRIPT)
            return Round(measured.p50_ms, measured.requests, [])

        alternate(versions, args.rounds, measure)
    for version in (baseline, candidate):
        print(f"{version.name}: median of round p50s {statistics.median(version.p50s):.3f} ms, "
              f"{version.requests} requests")
        print("  CPU ms per request: " + ", ".join(
            f"{name} {ms:.3f}" for name, ms in version.cpu_ms_per_request().items()))
    ratio = statistics.median(candidate.p50s) / statistics.median(baseline.p50s)
    print(f"candidate / baseline (median of round p50s): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
