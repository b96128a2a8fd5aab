"""The stack under test: `make run`'s launcher on free ports, plus the bench-only floor parts.

Only this harness adds to Envoy's config (through `Stack.edit_envoy_config`): a direct-response
route (`/bench/floor`, Envoy alone), a route to a bare grpc.aio echo process (`/bench.Echo/`),
and an access log of Envoy's per-phase timings that is off until the profile pass switches it
on through the admin runtime. The production config never has them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from cairn.stack.launcher import REPO_ROOT, Stack, free_port

from .load import LoadError

FLOOR_PATH = "/bench/floor"
ECHO_PATH = "/bench.Echo/Echo"
TIMING_RUNTIME_KEY = "cairn_bench.timing_log"
_FILTER_OFF = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
               "disabled": True}
_AUTHZ_OFF = {"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3."
                       "ExtAuthzPerRoute", "disabled": True}
# Envoy's per-phase durations of one request, in microseconds (see Envoy's COMMON_DURATION).
TIMING_FIELDS = {
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "total": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
    "request_in": "%COMMON_DURATION(DS_RX_BEG:DS_RX_END:us)%",
    "filters_to_upstream": "%COMMON_DURATION(DS_RX_END:US_TX_BEG:us)%",
    "upstream": "%COMMON_DURATION(US_TX_BEG:US_RX_END:us)%",
    "response_out": "%COMMON_DURATION(US_RX_END:DS_TX_END:us)%",
}

# Plan limits high enough for thousands of component creates and several 50 MB uploads.
BENCH_ENV = {
    "CAIRN_PLAN_COMPONENT_LIMIT": "1000000",
    "CAIRN_PLAN_STORAGE_LIMIT": str(10**13),
    "CAIRN_PLAN_MONTHLY_UPLOAD_LIMIT": str(10**13),
}


def add_bench_parts(rendered: str, echo_port: int, timing_log: Path) -> str:
    config = yaml.safe_load(rendered)
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm = manager["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    routes[:0] = [
        {"match": {"path": FLOOR_PATH},
         "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
         "typed_per_filter_config": {
             "envoy.filters.http.lua": _FILTER_OFF,
             "envoy.filters.http.ext_authz": _AUTHZ_OFF,
             "envoy.filters.http.grpc_json_transcoder": _FILTER_OFF}},
        {"match": {"prefix": "/bench.Echo/"},
         "route": {"cluster": "bench_echo", "timeout": "5s"},
         "typed_per_filter_config": {"envoy.filters.http.ext_authz": _AUTHZ_OFF}},
    ]
    hcm.setdefault("access_log", []).append({
        "name": "cairn_bench_timing",
        "filter": {"runtime_filter": {
            "runtime_key": TIMING_RUNTIME_KEY,
            "percent_sampled": {"numerator": 0, "denominator": "HUNDRED"}}},
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(timing_log),
            "log_format": {"json_format": TIMING_FIELDS}},
    })
    # The timing log's runtime key is switched through the admin interface.
    layers = config.setdefault("layered_runtime", {}).setdefault("layers", [])
    if not any("admin_layer" in layer for layer in layers):
        layers.append({"name": "cairn_bench_admin", "admin_layer": {}})
    config["static_resources"]["clusters"].append({
        "name": "bench_echo", "type": "STATIC", "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": "bench_echo", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": echo_port}}}}]}]},
    })
    return str(yaml.safe_dump(config, sort_keys=False))


@dataclass
class BenchStack:
    stack: Stack
    echo: subprocess.Popen[bytes]
    echo_port: int
    timing_log: Path

    @property
    def http(self) -> str:
        return self.stack.rest_url

    @property
    def host_port(self) -> str:
        return f"{self.stack.settings.bind_host}:{self.stack.settings.http_port}"

    @property
    def admin(self) -> str:
        s = self.stack.settings
        return f"http://{s.bind_host}:{s.envoy_admin_port}"

    def pids(self) -> dict[str, int]:
        """Process ids of the stack's parts and the echo floor, by name."""
        found = {c.name: c.process.pid for c in self.stack.children}
        found["echo"] = self.echo.pid
        return found

    def set_timing_log(self, on: bool) -> None:
        url = f"{self.admin}/runtime_modify?{TIMING_RUNTIME_KEY}={100 if on else 0}"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5):
            pass

    def stop(self) -> None:
        self.stack.stop()
        self.echo.terminate()
        self.echo.wait(10)


def start(run_dir: Path, extra_env: dict[str, str] | None = None) -> BenchStack:
    """The stack with default settings on free ports (logs in run_dir/logs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env |= BENCH_ENV | (extra_env or {})
    env |= {"CAIRN_HTTP_PORT": str(free_port()), "CAIRN_ENVOY_ADMIN_PORT": str(free_port())}
    env |= {f"CAIRN_{name.upper()}_GRPC_PORT": str(free_port())
            for name in ("project", "component", "auth", "ledger")}
    echo_port = free_port()
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "echo.log").open("wb") as out:
        echo = subprocess.Popen([sys.executable, "-m", "tests.bench.harness.echo",
                                 str(echo_port)], cwd=REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    timing_log = run_dir / "envoy-timing.log"
    stack = Stack.prepare(env, run_dir, log_dir=logs)
    stack.edit_envoy_config = lambda text: add_bench_parts(text, echo_port, timing_log)
    try:
        stack.start()
    except BaseException:
        echo.kill()
        raise
    bench = BenchStack(stack, echo, echo_port, timing_log)
    deadline = time.monotonic() + 30
    while not _echo_ready(echo_port):
        if echo.poll() is not None or time.monotonic() > deadline:
            bench.stop()
            raise LoadError(f"the echo floor did not start; see {logs / 'echo.log'}")
        time.sleep(0.1)
    return bench


def _echo_ready(port: int) -> bool:
    import grpc

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(ECHO_PATH, None, None)  # bytes in, bytes out
            return bool(call(b"ping", timeout=1) == b"ping")
    except grpc.RpcError:
        return False
