"""Benchmark: milliseconds per megabyte of `analyse_component` over the Golem fixtures.

Run with `.venv/bin/pytest -m bench tests/bench/test_bench_wasm.py -s`. For each valid fixture
the whole call (decode, analysis, conversion) is timed RUNS times with `time.perf_counter`
after one warm-up call; the median is reported per file, and the total is the sum of medians
divided by the total size. The numbers go in docs/wasm-metadata.md.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from cairn.component.wasm import analyse_component, metadata_to_json

RUNS = 9
MEGABYTE = 1_000_000


def median_seconds(data: bytes, *, render: bool) -> float:
    analyse_component(data)
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        metadata = analyse_component(data)
        if render:
            metadata_to_json(metadata)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@pytest.mark.bench
def test_bench_analyse_component(shared_fixtures: Path) -> None:
    wasm_dir = shared_fixtures / "golem" / "wasm"
    files = sorted(p for p in wasm_dir.glob("*.wasm") if not p.name.startswith("negative_"))
    total_bytes = 0
    total_seconds = 0.0
    total_with_json = 0.0
    print(f"\n{'file':48} {'KB':>8} {'ms':>8} {'ms/MB':>8}")
    for path in files:
        data = path.read_bytes()
        seconds = median_seconds(data, render=False)
        total_with_json += median_seconds(data, render=True)
        total_bytes += len(data)
        total_seconds += seconds
        print(
            f"{path.name:48} {len(data) / 1000:8.1f} {seconds * 1000:8.2f} "
            f"{seconds * 1000 / (len(data) / MEGABYTE):8.2f}"
        )
    megabytes = total_bytes / MEGABYTE
    print(
        f"{'TOTAL (' + str(len(files)) + ' components)':48} {total_bytes / 1000:8.1f} "
        f"{total_seconds * 1000:8.2f} {total_seconds * 1000 / megabytes:8.2f}"
    )
    print(
        f"with metadata_to_json: {total_with_json * 1000:.2f} ms, "
        f"{total_with_json * 1000 / megabytes:.2f} ms/MB"
    )
    for negative in sorted(wasm_dir.glob("negative_*.wasm")):
        data = negative.read_bytes()
        start = time.perf_counter()
        with pytest.raises(Exception, match="Parsing error"):
            analyse_component(data)
        print(f"{negative.name}: rejected in {(time.perf_counter() - start) * 1e6:.0f} µs")
    assert total_bytes > 0
