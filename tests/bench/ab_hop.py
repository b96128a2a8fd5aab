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
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cairn.stack.launcher import REPO_ROOT, free_port
from tests.bench.ab_ledger_create import extract
from tests.bench.harness import load, procstat

PARTS = {"auth": "cairn.auth", "project": "cairn.project", "redis": "redis-server",
         "envoy": "envoy"}
ROOT_TOKEN = str(uuid.uuid4())


@dataclass
class Version:
    name: str
    source: Path
    base_url: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    p50s: list[float] = field(default_factory=list)
    requests: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    def cpu_now(self) -> dict[str, float]:
        return {name: procstat.cpu_seconds(pid) for name, pid in self.pids.items()}


def _children(parent: int) -> dict[str, int]:
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


@contextmanager
def running(version: Version, work: Path, log_level: str) -> Iterator[Version]:
    """The version's stack on free ports (info-level JSON logs to a file), stopped on exit."""
    run_dir = work / f"run-{version.name}"
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update({
        "PYTHONPATH": str(version.source / "services"),
        "CAIRN_RUN_DIR": str(run_dir), "CAIRN_HTTP_PORT": str(http_port),
        "CAIRN_ENVOY_ADMIN_PORT": str(free_port()), "CAIRN_LOG_LEVEL": log_level,
        "CAIRN_ROOT_TOKEN": ROOT_TOKEN,
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
    baseline = Version(f"baseline-{args.baseline}",
                       extract(args.baseline, args.work / "baseline"))
    candidate = Version(f"candidate-{args.candidate or 'worktree'}",
                        extract(args.candidate, args.work / "candidate") if args.candidate
                        else REPO_ROOT)
    with ExitStack() as stacks:
        versions = [stacks.enter_context(running(v, args.work, args.log_level))
                    for v in (baseline, candidate)]
        for version in versions:  # warm-up: caches filled, code paths hot
            load.wrk(f"{version.base_url}/v1/projects/default", connections=4, seconds=1,
                     script=SCRIPT)
        for round_number in range(args.rounds):
            order = [0, 1] if round_number % 2 == 0 else [1, 0]
            for index in order:
                version = versions[index]
                before = version.cpu_now()
                measured = load.wrk(f"{version.base_url}/v1/projects/default", connections=1,
                                    seconds=args.seconds, script=SCRIPT)
                after = version.cpu_now()
                for name, seconds in after.items():
                    version.cpu[name] = version.cpu.get(name, 0.0) + seconds - before[name]
                version.requests += measured.requests
                version.p50s.append(measured.p50_ms)
            print(f"round {round_number + 1}: " + ", ".join(
                f"{v.name} p50 {v.p50s[-1]:.3f} ms" for v in versions), flush=True)
    for version in (baseline, candidate):
        print(f"{version.name}: median of round p50s {statistics.median(version.p50s):.3f} ms, "
              f"{version.requests} requests")
        print("  CPU ms per request: " + ", ".join(
            f"{name} {seconds * 1000 / version.requests:.3f}"
            for name, seconds in sorted(version.cpu.items())))
    ratio = statistics.median(candidate.p50s) / statistics.median(baseline.p50s)
    print(f"candidate / baseline (median of round p50s): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
