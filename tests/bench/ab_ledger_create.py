"""A/B: ledger create latency of two versions of Cairn, measured in the same run.

`python -m tests.bench.ab_ledger_create --baseline <git rev> [--candidate <git rev>]` extracts
each revision (`git archive`, no worktree; the candidate defaults to this checkout as it is),
generates its protobuf code, starts its stack (`python -m cairn.stack`, the revision's own
launcher, Envoy config and services, on free ports) and uploads model-tests-1.15.dar. Both stacks
run side by side; the measurement alternates between them, round by round (each round:
`--creates` sequential `POST /v1/create` of the documented Iou through Envoy on one keep-alive
connection, after a warm-up), so both see the same machine load. It prints each round's p50 and
the medians over all rounds, the candidate's p50 relative to the baseline's, and the CPU time the
ledger, auth and Redis processes and Envoy spent per create (from /proc: the figure a busy machine
distorts least).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from cairn.auth.ledger_jwt import encode_jwt_hs256
from cairn.stack.launcher import REPO_ROOT
from tests.bench.ab import Round, alternate, baseline_and_candidate, running

SHARED = REPO_ROOT.parent / "shared" / "fixtures"
IOU = {"issuer": "Alice", "owner": "Alice", "currency": "USD", "amount": "999.99",
       "observers": []}
PARTS = {"ledger": "cairn.ledger", "auth": "cairn.auth", "redis": "redis-server",
         "envoy": "envoy"}


def token(party: str) -> str:
    claims = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger", "applicationId": "ab",
                                              "actAs": [party]}}
    return encode_jwt_hs256(claims, "sandbox mode does not check signatures")


def creates(client: httpx.Client, count: int) -> list[float]:
    body = json.dumps({"templateId": "Iou:Iou", "payload": IOU})
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = client.post("/v1/create", content=body)
        times.append((time.perf_counter() - started) * 1000)
        if reply.status_code != 200:
            raise RuntimeError(f"create: {reply.status_code} {reply.text[:300]}")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ab_ledger_create",
                                     description=__doc__)
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--candidate", default="", help="git revision (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--creates", type=int, default=200, help="sequential creates per round")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "ab")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    baseline, candidate = baseline_and_candidate(args.baseline, args.candidate, args.work, PARTS)
    dar = (SHARED / "daml" / "model-tests-1.15.dar").read_bytes()
    headers = {"Authorization": f"Bearer {token('Alice')}",
               "Content-Type": "application/json"}
    with ExitStack() as stacks:
        versions = [stacks.enter_context(running(v, args.work, {"CAIRN_LOG_LEVEL": "warning"}))
                    for v in (baseline, candidate)]
        clients = [stacks.enter_context(httpx.Client(base_url=v.base_url, timeout=60,
                                                     headers=headers)) for v in versions]
        for client in clients:
            uploaded = client.post("/v1/packages", content=dar,
                                   headers={"Content-Type": "application/octet-stream"})
            assert uploaded.status_code == 200, uploaded.text
            creates(client, args.warmup)

        def measure(index: int) -> Round:
            times = creates(clients[index], args.creates)
            return Round(statistics.median(times), len(times), times)

        alternate(versions, args.rounds, measure)
    for version in (baseline, candidate):
        ordered = sorted(version.samples)
        print(f"{version.name}: median of round p50s {statistics.median(version.p50s):.2f} ms; "
              f"all {len(ordered)} creates: mean {statistics.mean(ordered):.2f} ms, "
              f"p99 {ordered[int(0.99 * len(ordered))]:.2f} ms")
        print("  CPU per create: " + ", ".join(
            f"{name} {ms:.3f} ms" for name, ms in version.cpu_ms_per_request().items()))
    ratio = statistics.median(candidate.p50s) / statistics.median(baseline.p50s)
    print(f"candidate / baseline (median of round p50s): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
