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
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cairn.auth.ledger_jwt import encode_jwt_hs256
from cairn.stack.launcher import REPO_ROOT, free_port
from tests.bench.harness import procstat

SHARED = REPO_ROOT.parent / "shared" / "fixtures"
IOU = {"issuer": "Alice", "owner": "Alice", "currency": "USD", "amount": "999.99",
       "observers": []}


PARTS = {"ledger": "cairn.ledger", "auth": "cairn.auth", "redis": "redis-server",
         "envoy": "envoy"}


@dataclass
class Version:
    name: str
    source: Path  # a checkout: services/, envoy/, scripts/
    base_url: str = ""
    pids: dict[str, int] = field(default_factory=dict)  # PARTS -> process id
    p50s: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds spent while measured

    def cpu_now(self) -> dict[str, float]:
        return {name: procstat.cpu_seconds(pid) for name, pid in self.pids.items()}


def _children(parent: int) -> dict[str, int]:
    """The stack's parts among `parent`'s child processes, by PARTS name."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) != parent:
            continue
        for name, marker in PARTS.items():
            if marker in cmdline:
                found[name] = int(stat.parent.name)
    return found


def extract(rev: str, into: Path) -> Path:
    """The tree of `rev` under `into` (git archive), with its protobuf code generated."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO_ROOT,
                             capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as tar_file:
        tar_file.write(archive)
        tar_file.seek(0)
        with tarfile.open(fileobj=tar_file) as tar:
            tar.extractall(into, filter="data")
    subprocess.run([sys.executable, "scripts/gen_protos.py"], cwd=into, check=True,
                   capture_output=True)
    return into


@contextmanager
def running(version: Version, work: Path) -> Iterator[Version]:
    """The version's stack on free ports, stopped on exit."""
    run_dir = work / f"run-{version.name}"
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update({
        "PYTHONPATH": str(version.source / "services"),
        "CAIRN_RUN_DIR": str(run_dir), "CAIRN_HTTP_PORT": str(http_port),
        "CAIRN_ENVOY_ADMIN_PORT": str(free_port()), "CAIRN_LOG_LEVEL": "warning",
        **{f"CAIRN_{n.upper()}_GRPC_PORT": str(free_port())
           for n in ("project", "component", "auth", "ledger")},
    })
    run_dir.mkdir(parents=True)
    log_path = run_dir / "stack.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "cairn.stack"], cwd=version.source,
                                   env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        while "Cairn is running" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{version.name} did not start:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        version.base_url = f"http://127.0.0.1:{http_port}"
        version.pids = _children(process.pid)
        yield version
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


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
    baseline = Version(f"baseline-{args.baseline}",
                       extract(args.baseline, args.work / "baseline"))
    candidate = Version(f"candidate-{args.candidate or 'worktree'}",
                        extract(args.candidate, args.work / "candidate") if args.candidate
                        else REPO_ROOT)
    dar = (SHARED / "daml" / "model-tests-1.15.dar").read_bytes()
    headers = {"Authorization": f"Bearer {token('Alice')}",
               "Content-Type": "application/json"}
    with ExitStack() as stacks:
        versions = [stacks.enter_context(running(v, args.work)) for v in (baseline, candidate)]
        clients = [stacks.enter_context(httpx.Client(base_url=v.base_url, timeout=60,
                                                     headers=headers)) for v in versions]
        for client in clients:
            uploaded = client.post("/v1/packages", content=dar,
                                   headers={"Content-Type": "application/octet-stream"})
            assert uploaded.status_code == 200, uploaded.text
            creates(client, args.warmup)
        for round_number in range(args.rounds):
            # Alternate which version goes first, so neither always follows the other.
            order = [0, 1] if round_number % 2 == 0 else [1, 0]
            for index in order:
                version = versions[index]
                before = version.cpu_now()
                times = creates(clients[index], args.creates)
                after = version.cpu_now()
                for name, seconds in after.items():
                    version.cpu[name] = version.cpu.get(name, 0.0) + seconds - before[name]
                version.p50s.append(statistics.median(times))
                version.samples.extend(times)
            print(f"round {round_number + 1}: " + ", ".join(
                f"{v.name} p50 {v.p50s[-1]:.2f} ms" for v in versions), flush=True)
    for version in (baseline, candidate):
        ordered = sorted(version.samples)
        print(f"{version.name}: median of round p50s {statistics.median(version.p50s):.2f} ms; "
              f"all {len(ordered)} creates: mean {statistics.mean(ordered):.2f} ms, "
              f"p99 {ordered[int(0.99 * len(ordered))]:.2f} ms")
        print("  CPU per create: " + ", ".join(
            f"{name} {seconds * 1000 / len(ordered):.3f} ms"
            for name, seconds in sorted(version.cpu.items())))
    ratio = statistics.median(candidate.p50s) / statistics.median(baseline.p50s)
    print(f"candidate / baseline (median of round p50s): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
