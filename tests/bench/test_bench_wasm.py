"""Benchmark: milliseconds per megabyte of `analyse_component` over the Golem fixtures.

Run with `.venv/bin/pytest -m bench tests/bench/test_bench_wasm.py -s`. For each valid fixture
the whole call (decode, analysis, conversion to the model) is run RUNS times after one warm-up
call, timed both by wall clock (`time.perf_counter`) and by this process's CPU time
(`time.process_time`, which does not count time other processes take from a busy machine).
The median is reported per file; the total is the sum of the medians over the total size.
The numbers go in docs/wasm-metadata.md.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from cairn.component.wasm import InvalidComponent, analyse_component, metadata_to_json

RUNS = 15
MEGABYTE = 1_000_000


def medians(data: bytes, *, render: bool = False) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds) of analysing `data` (and rendering its JSON)."""
    analyse_component(data)
    wall, cpu = [], []
    for _ in range(RUNS):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        metadata = analyse_component(data)
        if render:
            metadata_to_json(metadata)
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return statistics.median(wall), statistics.median(cpu)


def per_megabyte(seconds: float, size: int) -> float:
    return seconds * 1000 / (size / MEGABYTE)


@pytest.mark.bench
def test_bench_analyse_component(shared_fixtures: Path) -> None:
    wasm_dir = shared_fixtures / "golem" / "wasm"
    files = sorted(p for p in wasm_dir.glob("*.wasm") if not p.name.startswith("negative_"))
    total_size, total_wall, total_cpu, total_rendered = 0, 0.0, 0.0, 0.0
    print(f"\n{'file':46} {'KB':>7} {'wall ms':>8} {'ms/MB':>7} {'cpu ms':>8} {'ms/MB':>7}")
    for path in files:
        data = path.read_bytes()
        wall, cpu = medians(data)
        total_rendered += medians(data, render=True)[1]
        total_size += len(data)
        total_wall += wall
        total_cpu += cpu
        print(
            f"{path.name:46} {len(data) / 1000:7.1f} {wall * 1000:8.2f} "
            f"{per_megabyte(wall, len(data)):7.2f} {cpu * 1000:8.2f} "
            f"{per_megabyte(cpu, len(data)):7.2f}"
        )
    print(
        f"{f'TOTAL ({len(files)} components)':46} {total_size / 1000:7.1f} "
        f"{total_wall * 1000:8.2f} {per_megabyte(total_wall, total_size):7.2f} "
        f"{total_cpu * 1000:8.2f} {per_megabyte(total_cpu, total_size):7.2f}"
    )
    print(
        f"with metadata_to_json (cpu): {total_rendered * 1000:.2f} ms, "
        f"{per_megabyte(total_rendered, total_size):.2f} ms/MB"
    )
    for negative in sorted(wasm_dir.glob("negative_*.wasm")):
        data = negative.read_bytes()
        start = time.perf_counter()
        with pytest.raises(InvalidComponent, match="Parsing error"):
            analyse_component(data)
        print(f"{negative.name}: rejected in {(time.perf_counter() - start) * 1e6:.0f} µs")
    assert total_size > 0
