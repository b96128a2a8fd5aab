"""report.json (every figure) and report.md (the same, as tables beside floors and targets)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import Any

from cairn.stack.launcher import REPO_ROOT, envoy_binary

from .scenarios import LATENCY_CONNECTIONS, THROUGHPUT_CONNECTIONS, Result

FLOORS = ("floor_http", "floor_grpc")
# (scenario, figure, comparison, bound, what the issue asks)
TARGETS: list[tuple[str, str, str, float, str]] = [
    ("rest_cheapest", "latency.p50_ms", "<=", 1.2, "cheapest authenticated REST call p50"),
    ("ledger_create", "latency.p50_ms", "<=", 2.0, "ledger create p50"),
    ("ledger_create", "throughput.rps", ">=", 1200,
     f"ledger creates/s with {THROUGHPUT_CONNECTIONS} connections"),
    ("ledger_exercise", "latency.p50_ms", "<=", 2.5, "exercise p50 (wrk, a C client)"),
    ("upload_50mb", "extra.mb_per_s", ">=", 200, "50 MB upload MB/s through Envoy"),
    ("upload_50mb", "extra.rss_growth_mib", "<", 30, "component service RSS growth MiB"),
    ("ws_fanout", "latency.p99_ms", "<=", 50, "fan-out to 100 subscribers p99 ms"),
    ("ledger_query_5k", "latency.p50_ms", "<=", 10, "equality query over 5,000 contracts p50"),
    ("ledger_query_5k_all", "latency.p50_ms", "<=", 60, "query returning all 5,000 p50"),
    ("ledger_query_100k", "latency.p50_ms", "<=", 100,
     "equality query over 100,000 contracts p50"),
]


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):  # noqa: SIM115
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _envoy_version(text: str) -> str:
    """1.40.0 from "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"."""
    _, _, rest = text.partition("version:")
    parts = rest.strip().split("/")
    return parts[1] if len(parts) > 1 else ""


def environment(load_before: tuple[float, float, float], load_after: tuple[float, float, float],
                seconds: float, wall: float) -> dict[str, Any]:
    envoy = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "envoy": _envoy_version(envoy.stdout),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "seconds_per_run": seconds,
        "wall_seconds": round(wall),
    }


def _figure(entry: dict[str, Any], path: str) -> float | None:
    value: Any = entry
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _check(value: float, comparison: str, bound: float) -> bool:
    return {"<=": value <= bound, "<": value < bound, ">=": value >= bound}[comparison]


def to_json(meta: dict[str, Any], results: list[Result],
            profiles: dict[str, Any]) -> dict[str, Any]:
    scenarios = {r.key: r.to_json() for r in results}
    floors = {key: scenarios[key] for key in FLOORS if key in scenarios}
    for entry in scenarios.values():
        ratios = {}
        for floor_key, floor in floors.items():
            for run in ("latency", "throughput"):
                mine, theirs = entry.get(run), floor.get(run)
                if mine and theirs:
                    ratios[f"{run}_p50_x_{floor_key}"] = round(
                        mine["p50_ms"] / theirs["p50_ms"], 1)
                    ratios[f"{run}_rps_share_of_{floor_key}"] = round(
                        mine["rps"] / theirs["rps"], 3)
        entry["ratios"] = ratios
    targets = []
    for key, path, comparison, bound, what in TARGETS:
        value = _figure(scenarios.get(key, {}), path)
        met = value is not None and _check(value, comparison, bound)
        miss = None
        if value is not None and not met:
            miss = round(value / bound, 2) if comparison != ">=" else round(bound / value, 2)
        targets.append({"scenario": key, "figure": path, "target": f"{comparison} {bound:g}",
                        "what": what, "value": value, "met": met, "off_by_factor": miss})
    return {"environment": meta, "scenarios": scenarios, "targets": targets,
            "profiles": profiles}


def one_line(result: Result) -> str:
    if result.error:
        return f"FAILED: {result.error[:200]}"
    parts = []
    if result.latency:
        parts.append(f"p50 {result.latency.p50_ms:.3f} ms p99 {result.latency.p99_ms:.3f} ms")
    if result.throughput:
        parts.append(f"{result.throughput.rps:.0f}/s at {THROUGHPUT_CONNECTIONS}")
    parts += [f"{k} {v}" for k, v in result.extra.items() if not isinstance(v, list | dict)]
    return "; ".join(parts)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def markdown(data: dict[str, Any]) -> str:
    env = data["environment"]
    scenarios: dict[str, Any] = data["scenarios"]
    lines = [
        "# Cairn benchmark report",
        "",
        "Written by `make bench` (`python -m tests.bench.harness`); do not edit by hand. How it",
        "measures, and what the figures mean, is in [README.md](README.md).",
        "",
        f"- run: {env['date']}, commit `{env['commit']}`"
        f"{' (uncommitted changes)' if env['dirty'] else ''}, {env['wall_seconds']} s",
        f"- machine: {env['cores']} cores ({env['cpu']}), Python {env['python']}, "
        f"Envoy {env['envoy']}",
        f"- load average (1, 5, 15 min): before {', '.join(map(str, env['load_average_before']))};"
        f" after {', '.join(map(str, env['load_average_after']))}",
        f"- each load run lasts {env['seconds_per_run']:g} s: latency with "
        f"{LATENCY_CONNECTIONS} connection, throughput with {THROUGHPUT_CONNECTIONS}",
        "",
        "## Targets",
        "",
        "The issue's targets hold for a quiet 2-core machine; compare the load average above. For "
        "a miss, the CPU table and the profile sections below show where the time goes, and "
        "[README.md](README.md#where-the-time-goes) what is left.",
        "",
        "| target | measured | bound | |",
        "|---|---:|---:|---|",
    ]
    for t in data["targets"]:
        verdict = "met" if t["met"] else (
            f"missed ({t['off_by_factor']}x)" if t["off_by_factor"] else "not measured")
        value = "-" if t["value"] is None else f"{t['value']:g}"
        lines.append(f"| {t['what']} | {value} | {t['target']} | {verdict} |")
    lines += [
        "",
        "## Every figure beside the floors",
        "",
        "Latency in ms at 1 connection; throughput in requests/s at "
        f"{THROUGHPUT_CONNECTIONS} connections (with its p50 and p99). `x HTTP floor` is the p50 "
        "divided by the direct-response p50, `x gRPC floor` by the echo-through-Envoy p50; "
        "`% gRPC floor` is the throughput as a share of the echo's.",
        "",
        f"| scenario | p50 | p99 | x HTTP floor | x gRPC floor | req/s | % gRPC floor | p50 at "
        f"{THROUGHPUT_CONNECTIONS} | p99 at {THROUGHPUT_CONNECTIONS} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in scenarios.values():
        lat, thr, ratios = entry["latency"], entry["throughput"], entry["ratios"]
        if entry["error"]:
            lines.append(f"| {entry['title']} | failed: {entry['error'][:120]} ||||||||")
            continue
        if lat is None or entry["key"] in ("ws_fanout",):
            continue
        share = ratios.get("throughput_rps_share_of_floor_grpc")
        throughput = (f"{thr['rps']:.0f} | {'-' if share is None else f'{share:.0%}'} | "
                      f"{_ms(thr['p50_ms'])} | {_ms(thr['p99_ms'])}") if thr else "- | - | - | -"
        lines.append(
            f"| {entry['title']} | {_ms(lat['p50_ms'])} | {_ms(lat['p99_ms'])} | "
            f"{ratios.get('latency_p50_x_floor_http', '-')} | "
            f"{ratios.get('latency_p50_x_floor_grpc', '-')} | {throughput} |")
    upload = scenarios.get("upload_50mb")
    if upload and not upload["error"]:
        lines += ["", f"**{upload['title']}** ({upload['method']}): "
                  f"{upload['extra']['mb_per_s']} MB/s, component service RSS growth "
                  f"{upload['extra']['rss_growth_mib']} MiB; download "
                  f"{upload['extra']['download_mb_per_s']} MB/s. Rounds: "
                  + "; ".join(f"{r['seconds'] * 1000:.0f} ms, {r['mb_per_s']} MB/s, "
                              f"+{r['rss_growth_mib']} MiB" for r in upload["extra"]["rounds"])]
    fanout = scenarios.get("ws_fanout")
    if fanout and not fanout["error"] and fanout["latency"]:
        lat = fanout["latency"]
        lines += ["", f"**{fanout['title']}** ({fanout['method']}): "
                  f"{fanout['extra']['deliveries']} deliveries, p50 {_ms(lat['p50_ms'])} ms, "
                  f"p90 {_ms(lat['p90_ms'])} ms, p99 {_ms(lat['p99_ms'])} ms, "
                  f"max {_ms(lat['max_ms'])} ms; the create alone p50 "
                  f"{_ms(fanout['extra']['create_p50_ms'])} ms."]
    lines += _cpu_table(scenarios)
    lines += _profile_sections(data.get("profiles", {}))
    lines += ["", "## How each figure was taken", ""]
    lines += [f"- **{e['title']}**: {e['method']}" for e in scenarios.values()]
    return "\n".join(lines) + "\n"


def _cpu_table(scenarios: dict[str, Any]) -> list[str]:
    parts = ["envoy", "auth", "project", "component", "ledger", "redis", "echo", "load tool"]
    lines = ["", "## CPU time per request (1 connection)", "",
             "Milliseconds of CPU each process spent per request during the latency run "
             "(/proc/PID/stat). On a quiet machine, p50 minus their sum is time spent waiting "
             "(wake-ups, scheduling, loopback).", "",
             "| scenario | p50 | " + " | ".join(parts) + " | sum |",
             "|---|---:|" + "---:|" * (len(parts) + 1)]
    for entry in scenarios.values():
        cpu = entry["cpu_ms_per_request"]
        if not cpu or not entry["latency"]:
            continue
        cells = [_ms(cpu.get(p)) if cpu.get(p) else "" for p in parts]
        lines.append(f"| {entry['key']} | {_ms(entry['latency']['p50_ms'])} | "
                     + " | ".join(cells) + f" | {_ms(sum(cpu.values()))} |")
    return lines


def _profile_sections(profiles: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, prof in profiles.items():
        lat = prof["latency"]
        lines += ["", f"## Where the time of `{key}` goes", "",
                  f"A further latency run ({lat['requests']} requests, p50 {_ms(lat['p50_ms'])} "
                  "ms) with py-spy sampling every service (`--nonblocking`, 250 Hz) and Envoy "
                  "logging its phases. A service's CPU is split into its main thread (the "
                  "event loop, where py-spy's samples are put in categories) and the rest "
                  "(gRPC core's threads, worker threads).", ""]
        phases = prof["envoy_phases_ms"]
        if phases:
            lines += ["Envoy's phases (median ms): " + ", ".join(
                f"{name.replace('_', ' ')} {_ms(v)}" for name, v in phases.items()), ""]
        lines += ["| process | CPU ms/request | main thread | its samples by category "
                  "(ms/request) |", "|---|---:|---:|---|"]
        cats = prof["categories_ms"]
        main = prof.get("main_thread_cpu_ms_per_request", {})
        for name, ms in sorted(prof["cpu_ms_per_request"].items(), key=lambda kv: -kv[1]):
            if ms < 0.05:
                continue
            detail = ", ".join(f"{c} {_ms(v)}" for c, v in
                               sorted(cats.get(name, {}).items(), key=lambda kv: -kv[1]))
            lines.append(f"| {name} | {_ms(ms)} | {_ms(main.get(name))} | {detail} |")
        tops = prof["top_functions"]
        for name, top in tops.items():
            lines += ["", f"Top leaf functions in {name}: " + "; ".join(
                f"`{frame[:90]}` {share:.0%}" for frame, share in top[:6])]
    return lines
