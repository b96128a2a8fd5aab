"""End-to-end: the real stack (`python -m cairn.stack`, what `make run` runs) on free ports.

It is started exactly as a user would start it in the background: no terminal, stdin closed.
Every call goes through the real Envoy to the real services and a real Redis process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cairn.stack.launcher import REPO_ROOT, free_port

pytestmark = pytest.mark.e2e


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    base_url: str
    grpc_target: str
    root_token: str
    redis_url: str
    run_dir: Path
    grpc_ports: dict[str, int]
    # Prometheus scrape URL per part ("project", ..., "envoy"), as the banner prints them.
    metrics_urls: dict[str, str] = field(default_factory=dict)


def exact(value: object) -> str:
    """The compact JSON text the services write, for byte-for-byte comparisons."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def child_pids(parent: int) -> set[int]:
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pids.add(int(stat.parent.name))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def running_stack(run_dir: Path, extra_env: Mapping[str, str] | None = None
                  ) -> Iterator[RunningStack]:
    """`python -m cairn.stack` on free ports under `run_dir`; stopped (and checked) on exit."""
    ports = {name: free_port() for name in ("project", "component", "auth", "ledger")}
    http_port, admin_port = free_port(), free_port()
    env = {
        **os.environ,
        "CAIRN_RUN_DIR": str(run_dir),
        "CAIRN_HTTP_PORT": str(http_port),
        "CAIRN_ENVOY_ADMIN_PORT": str(admin_port),
        **{f"CAIRN_{n.upper()}_GRPC_PORT": str(p) for n, p in ports.items()},
    }
    env.pop("CAIRN_ROOT_TOKEN", None)
    env.pop("CAIRN_REDIS_URL", None)
    env.update(extra_env or {})
    log_path = run_dir / "stack.log"
    # Append mode: every part writes to this one file, and only O_APPEND keeps one process's
    # write (Envoy flushes its access log in blocks) from landing over another's line.
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cairn.stack"],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
    deadline = time.monotonic() + 120
    banner = ""
    while "Cairn is running" not in banner:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"stack did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)
        banner = log_path.read_text(errors="replace")
    shown_redis_url = re.search(r"Redis\s+: (\S+)", banner)
    token = (run_dir / "root-token").read_text().strip()
    assert shown_redis_url and token in banner
    # The banner never shows the embedded Redis's password; it is in run_dir, owner-only.
    password = (run_dir / "redis-password").read_text().strip()
    assert password not in banner
    redis_url = shown_redis_url.group(1).replace(":***@", f":{password}@")
    metrics_urls = dict(re.findall(r"(\w+) (http://\S+/metrics)", banner))
    running = RunningStack(
        process, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{http_port}", token,
        redis_url, run_dir, ports, metrics_urls,
    )
    children = child_pids(process.pid)
    assert len(children) == 6, "redis, four services and envoy"
    try:
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, log_path.read_text()[-4000:]
    assert not [pid for pid in children if alive(pid)], "SIGTERM must stop every child"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The schemathesis runs' call counts (tests/e2e/openapi_seeds.py), when they ran."""
    from .openapi_seeds import SUMMARIES

    for line in SUMMARIES:
        terminalreporter.write_line(line)
