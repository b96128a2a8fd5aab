"""Where a request's time goes: py-spy samples of each Python process and Envoy's phase timings.

During a 1-connection run, `py-spy record --nonblocking` samples every service process (idle
threads are not sampled, so samples follow CPU time) and Envoy writes each request's phase
durations to the bench-only timing log. Each sample is put in the first category (in the order
below) that has a frame anywhere on its stack, so `json.dumps` called by the log renderer counts
as logging; multiplying a category's share by the process's CPU time per request gives
milliseconds per request.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

# A thread blocked in (or just woken from) the event loop's epoll wait: py-spy can sample it as
# active while it waits for a core. Not CPU work; left out of the shares.
WAITING = re.compile(r"select \(\S*/selectors\.py:\d+\)$")
# (category, pattern over one frame "function (/full/path/file.py:line)").
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("logging (structlog)", re.compile(r"/(structlog|logging)/")),
    ("Redis client", re.compile(r"/redis/")),
    ("DAML engine", re.compile(r"/cairn/ledger/lf/")),
    ("JSON", re.compile(r"/json/|orjson|cairn/runtime/rest\.py")),
    ("protobuf", re.compile(r"/google/protobuf/")),
    ("tokens, HMAC", re.compile(r"/(hmac|hashlib|base64)\.py|cairn/runtime/principal\.py|"
                                r"ledger_jwt\.py|/jwt/|/cryptography/")),
    ("Cairn code", re.compile(r"/cairn/")),
    ("asyncio, grpc.aio (Python)", re.compile(r"/asyncio/|/grpc/|/concurrent/|/_weakrefset")),
]
OTHER = "other"
# Main-thread samples are cut at the frame the event loop runs callbacks from: asyncio's
# `Handle._run`, or with uvloop (whose loop is C) `Runner.run`. What runs there with no Python
# frame above it is the loop's own C work or grpc.aio's Cython server code.
CALLBACKS = ("Handle._run (", "Runner.run (")
IN_CYTHON = "loop internals, grpc.aio Cython"
LOOP = "event loop (_run_once)"
PYTHON_PARTS = ("auth", "project", "component", "ledger")


def categorise(stack: str) -> str:
    """The category of one main-thread sample, judged on the frames of the running callback."""
    start = max(stack.rfind(marker) for marker in CALLBACKS)
    if start < 0:
        return LOOP
    inside = stack[start:].partition(";")[2]
    if not inside:
        return IN_CYTHON
    for name, pattern in CATEGORIES:
        if pattern.search(inside):
            return name
    return OTHER


def top_functions(samples: dict[str, int], n: int = 8) -> list[tuple[str, float]]:
    """The main thread's leaf functions with the largest share of its working samples."""
    leaves: Counter[str] = Counter()
    for stack, count in samples.items():
        if _main_thread(stack) and not WAITING.search(stack):
            leaves[_short(stack.rsplit(";", 1)[-1])] += count
    total = sum(leaves.values()) or 1
    return [(frame, count / total) for frame, count in leaves.most_common(n)]


def _short(frame: str) -> str:
    """A frame with its path cut to what follows site-packages or the Python library."""
    return re.sub(r"\(\S*/(site-packages|python3\.\d+|services)/", "(", frame)


class Recorder:
    """py-spy on each Python part for `seconds`, started before and joined after a load run."""

    def __init__(self, pids: dict[str, int], out: Path, seconds: float) -> None:
        self._runs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self._pids = {name: pid for name, pid in pids.items() if name in PYTHON_PARTS}
        self._out = out
        self._seconds = seconds

    @staticmethod
    def binary() -> str | None:
        """py-spy from the virtualenv (the `bench` extra), else from PATH."""
        beside = Path(sys.executable).parent / "py-spy"
        return str(beside) if beside.exists() else shutil.which("py-spy")

    def start(self) -> None:
        self._out.mkdir(parents=True, exist_ok=True)
        for name, pid in self._pids.items():
            raw = self._out / f"{name}.folded"
            argv = [self.binary() or "py-spy", "record", "--nonblocking", "--format", "raw",
                    "--full-filenames", "-r", "250",
                    "-d", str(max(1, round(self._seconds))), "-p", str(pid), "-o", str(raw)]
            self._runs[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL), raw)

    def finish(self) -> dict[str, dict[str, int]]:
        """Folded stacks (stack -> samples) per part."""
        result = {}
        for name, (process, raw) in self._runs.items():
            process.wait(self._seconds + 60)
            samples: dict[str, int] = {}
            if raw.exists():
                for line in raw.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    if stack and count.isdigit():
                        samples[stack] = samples.get(stack, 0) + int(count)
            result[name] = samples
        return result


def _main_thread(stack: str) -> bool:
    return stack.startswith("_run_module_as_main")


def category_shares(samples: dict[str, int]) -> dict[str, float]:
    """Shares of the main thread's (the event loop's) working samples, by category."""
    totals: Counter[str] = Counter()
    for stack, count in samples.items():
        if _main_thread(stack) and not WAITING.search(stack):
            totals[categorise(stack)] += count
    total = sum(totals.values()) or 1
    return {name: count / total for name, count in totals.items()}


def envoy_phases(timing_log: Path, offset: int, path_prefix: str) -> dict[str, float]:
    """Median of each phase (ms) over the requests logged after `offset` whose path starts with
    the prefix."""
    phases: dict[str, list[float]] = {}
    if not timing_log.exists():
        return {}
    with timing_log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not str(entry.get("path", "")).startswith(path_prefix):
            continue
        for key, value in entry.items():
            if key != "path" and isinstance(value, int | float):
                phases.setdefault(key, []).append(value / 1000)
    return {key: statistics.median(values) for key, values in phases.items()}
