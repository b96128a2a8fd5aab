"""Paired A/B runs: two versions of Cairn side by side in one run, measured in alternating rounds.

What `tests.bench.ab_ledger_create` and `tests.bench.ab_hop` share. Each version is a git revision
extracted with `git archive` (no worktree; its protobuf code generated) or this checkout as it is,
started with its own launcher, services and Envoy config (`python -m cairn.stack`) on free ports.
Rounds alternate which version goes first, so a drift in the machine's load falls on both alike,
and the CPU time each named part spends while measured is read from /proc: the figure a busy
machine distorts least.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cairn.stack.launcher import REPO_ROOT, free_port
from tests.bench.harness import procstat


class Round(NamedTuple):
    """One version's measurement in one round."""

    p50_ms: float
    requests: int
    samples_ms: list[float]  # per-request latencies, when the load tool gives them


@dataclass
class Version:
    name: str
    source: Path  # a checkout: services/, envoy/, scripts/
    parts: Mapping[str, str]  # part name -> what its command line contains
    base_url: str = ""
    pids: dict[str, int] = field(default_factory=dict)  # part name -> process id
    p50s: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    requests: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds spent while measured

    def cpu_now(self) -> dict[str, float]:
        return {name: procstat.cpu_seconds(pid) for name, pid in self.pids.items()}

    def cpu_ms_per_request(self) -> dict[str, float]:
        return {name: seconds * 1000 / self.requests for name, seconds in sorted(self.cpu.items())}


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


def baseline_and_candidate(baseline: str, candidate: str, work: Path,
                           parts: Mapping[str, str]) -> tuple[Version, Version]:
    """The two versions; an empty `candidate` is this checkout as it is."""
    return (
        Version(f"baseline-{baseline}", extract(baseline, work / "baseline"), parts),
        Version(f"candidate-{candidate or 'worktree'}",
                extract(candidate, work / "candidate") if candidate else REPO_ROOT, parts),
    )


def _children(parent: int, parts: Mapping[str, str]) -> dict[str, int]:
    """The stack's parts among `parent`'s child processes, by part name."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) != parent:
            continue
        for name, marker in parts.items():
            if marker in cmdline:
                found[name] = int(stat.parent.name)
    return found


@contextmanager
def running(version: Version, work: Path, env: Mapping[str, str]) -> Iterator[Version]:
    """The version's stack on free ports, with `env` on top of them, stopped on exit."""
    run_dir = work / f"run-{version.name}"
    http_port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    environment.update({
        "PYTHONPATH": str(version.source / "services"),
        "CAIRN_RUN_DIR": str(run_dir), "CAIRN_HTTP_PORT": str(http_port),
        "CAIRN_ENVOY_ADMIN_PORT": str(free_port()),
        **{f"CAIRN_{n.upper()}_GRPC_PORT": str(free_port())
           for n in ("project", "component", "auth", "ledger")},
        **env,
    })
    run_dir.mkdir(parents=True)
    log_path = run_dir / "stack.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "cairn.stack"], cwd=version.source,
                                   env=environment, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=log)
    try:
        deadline = time.monotonic() + 180
        while "Cairn is running" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{version.name} did not start:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        version.base_url = f"http://127.0.0.1:{http_port}"
        version.pids = _children(process.pid, version.parts)
        yield version
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def alternate(versions: list[Version], rounds: int, measure: Callable[[int], Round]) -> None:
    """`rounds` rounds of `measure(index)` on each version, alternating which goes first; each
    version's p50s, samples, request count and CPU per part accumulate."""
    for round_number in range(rounds):
        order = [0, 1] if round_number % 2 == 0 else [1, 0]
        for index in order:
            version = versions[index]
            before = version.cpu_now()
            measured = measure(index)
            after = version.cpu_now()
            for name, seconds in after.items():
                version.cpu[name] = version.cpu.get(name, 0.0) + seconds - before[name]
            version.p50s.append(measured.p50_ms)
            version.samples.extend(measured.samples_ms)
            version.requests += measured.requests
        print(f"round {round_number + 1}: " + ", ".join(
            f"{v.name} p50 {v.p50s[-1]:.3f} ms" for v in versions), flush=True)
