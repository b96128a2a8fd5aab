"""CPU time and memory of the processes under test, read from /proc (Linux)."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    return cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's main thread (its event loop) so far."""
    return cpu_seconds_of(Path(f"/proc/{pid}/task/{pid}/stat"))


def cpu_seconds_of(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children_cpu_seconds() -> float:
    """CPU time of this process's waited-for children (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds each named process (and the load tool) spent between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._before: dict[str, float] = {}
        self.main_threads: dict[str, float] = {}  # of the processes' CPU, their main threads'

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        now |= {f"{name} main thread": main_thread_cpu_seconds(pid)
                for name, pid in self._pids.items()}
        now["load tool"] = children_cpu_seconds()
        return now

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> dict[str, float]:
        after = self._now()
        spent = {name: after[name] - self._before[name] for name in after}
        self.main_threads = {name.removesuffix(" main thread"): seconds
                             for name, seconds in spent.items() if name.endswith(" main thread")}
        return {name: s for name, s in spent.items() if not name.endswith(" main thread")}


def status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise KeyError(field)
    return int(match.group(1))


def reset_peak_rss(pid: int) -> None:
    """Make VmHWM (peak RSS) start again from the current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
