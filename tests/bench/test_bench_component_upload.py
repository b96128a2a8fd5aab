"""Benchmark: a 50 MB component upload through Envoy into the component service and blob store.

Run with `.venv/bin/pytest -m bench tests/bench/test_bench_component_upload.py -s`.

It starts the real stack (`python -m cairn.stack`, as `make run` does, disk blob store) on free
ports, then for ROUNDS rounds:
- `PUT /v1/components/{id}/upload` of a valid 50,000,000-byte component (the shopping-cart
  fixture plus a custom section of padding, so it sits exactly at the default 50 MB limit);
- `GET /v1/components/{id}/download` of that version, checked byte for byte.
Wall time is measured around each HTTP call with `time.perf_counter`. The component service's
memory is read from `/proc/<pid>/status`: its peak RSS (VmHWM) is reset through
`/proc/<pid>/clear_refs` before each upload, and growth = peak during the upload minus the RSS
before it. The numbers go in docs/component-service.md.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cairn.stack.launcher import REPO_ROOT, free_port

ROUNDS = 5
TARGET_SIZE = 50_000_000
MB = 1_000_000


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def padded_component(base: bytes, total: int) -> bytes:
    """`base` plus one custom section whose payload brings the binary to exactly `total` bytes."""
    name = b"cairn-bench-padding"
    content = leb128(len(name)) + name
    for payload in range(total - len(base) - len(content) - 12, total - len(base)):
        section = b"\x00" + leb128(len(content) + payload) + content
        if len(base) + len(section) + payload == total:
            return base + section + bytes(payload)
    raise AssertionError("no padding fits")


def status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match, field
    return int(match.group(1))


@dataclass
class Stack:
    base_url: str
    token: str
    component_pid: int


def child_pids(parent: int) -> dict[int, str]:
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found[int(stat.parent.name)] = cmdline
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("bench-stack")
    http_port = free_port()
    env = {
        **os.environ,
        "CAIRN_RUN_DIR": str(run_dir),
        "CAIRN_HTTP_PORT": str(http_port),
        "CAIRN_ENVOY_ADMIN_PORT": str(free_port()),
        "CAIRN_LOG_LEVEL": "warning",
        **{f"CAIRN_{n.upper()}_GRPC_PORT": str(free_port())
           for n in ("project", "component", "auth", "ledger")},
    }
    env.pop("CAIRN_ROOT_TOKEN", None)
    env.pop("CAIRN_REDIS_URL", None)
    log_path = run_dir / "stack.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "cairn.stack"], cwd=REPO_ROOT, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while "Cairn is running" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"stack did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    component = [pid for pid, cmd in child_pids(process.pid).items() if "cairn.component" in cmd]
    assert len(component) == 1
    yield Stack(f"http://127.0.0.1:{http_port}", (run_dir / "root-token").read_text().strip(),
                component[0])
    process.send_signal(signal.SIGTERM)
    process.wait(30)


@pytest.mark.bench
def test_bench_50mb_upload_through_envoy(stack: Stack, shared_fixtures: Path) -> None:
    base = (shared_fixtures / "golem" / "wasm" / "wasmast_shopping-cart.wasm").read_bytes()
    big = padded_component(base, TARGET_SIZE)
    pid = stack.component_pid
    with httpx.Client(base_url=stack.base_url, timeout=300,
                      headers={"Authorization": f"Bearer {stack.token}"}) as client:
        created = client.post("/v1/components", files={
            "query": (None, f'{{"componentName":"bench-{uuid.uuid4().hex[:8]}"}}'),
            "component": ("c.wasm", base),
        })
        assert created.status_code == 200, created.text
        component_id = created.json()["versionedComponentId"]["componentId"]
        uploads, downloads, growths, peaks = [], [], [], []
        for _ in range(ROUNDS):
            rss_before = status_kib(pid, "VmRSS")
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            started = time.perf_counter()
            response = client.put(f"/v1/components/{component_id}/upload", content=big,
                                  headers={"Content-Type": "application/octet-stream"})
            uploads.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            assert response.json()["componentSize"] == TARGET_SIZE
            peak = status_kib(pid, "VmHWM")
            peaks.append(peak)
            growths.append(peak - rss_before)
            version = response.json()["versionedComponentId"]["version"]
            started = time.perf_counter()
            download = client.get(f"/v1/components/{component_id}/download",
                                  params={"version": version})
            downloads.append(time.perf_counter() - started)
            assert download.content == big
        over = big + b"\0"
        rejected = client.put(f"/v1/components/{component_id}/upload", content=over,
                              headers={"Content-Type": "application/octet-stream"})
        assert rejected.status_code == 403

    upload_s, download_s = statistics.median(uploads), statistics.median(downloads)
    print(f"\n50 MB component ({TARGET_SIZE} bytes), {ROUNDS} rounds, medians:")
    print(f"  upload   PUT .../upload   {upload_s * 1000:8.0f} ms  "
          f"{TARGET_SIZE / MB / upload_s:7.1f} MB/s  "
          f"(min {min(uploads) * 1000:.0f} ms, max {max(uploads) * 1000:.0f} ms)")
    print(f"  download GET .../download {download_s * 1000:8.0f} ms  "
          f"{TARGET_SIZE / MB / download_s:7.1f} MB/s")
    print(f"  component service peak RSS growth during upload: median "
          f"{statistics.median(growths) / 1024:.1f} MiB, max {max(growths) / 1024:.1f} MiB "
          f"(upload is {TARGET_SIZE / 2**20:.1f} MiB); peak RSS max {max(peaks) / 1024:.1f} MiB")
    # One in-memory copy (for the metadata parse) plus slack for buffers; two copies would fail.
    assert max(growths) * 1024 < 1.6 * TARGET_SIZE
