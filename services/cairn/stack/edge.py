"""`python -m cairn.stack.edge`: Cairn's Envoy as a container process (what the Helm chart runs).

The configuration has one source, envoy/envoy.yaml.in, rendered by `cairn.stack.envoy_config`
exactly as `make run` renders it; only the inputs differ. Here they come from the environment:
the upstreams are the services' DNS names (`cairn.stack.envoy_config.render` makes clusters with
host names STRICT_DNS, so Envoy follows the pods behind a headless Service). The rendered file is
written under `CAIRN_RUN_DIR` (a writable volume; the root file system may be read-only), then
this process is replaced by Envoy, so Envoy receives the pod's signals directly.

| variable | default | meaning |
|---|---|---|
| `CAIRN_BIND_HOST`, `CAIRN_HTTP_PORT`, `CAIRN_ENVOY_ADMIN_PORT` | as in the README | listeners |
| `CAIRN_ENVOY_STATS_PORT` | `9902` | Prometheus text at `/metrics` |
| `CAIRN_OTLP_ENDPOINT`, `CAIRN_TRACE_SAMPLE_RATIO` | unset (off), `1.0` | OTLP/gRPC traces |
| `CAIRN_{AUTH,PROJECT,COMPONENT,LEDGER}_ADDR` | `127.0.0.1:<service gRPC port>` | upstreams |
| `CAIRN_LEDGER_WS_ADDR` | ledger host:`CAIRN_LEDGER_WS_PORT` | ledger WebSocket upstream |
| `CAIRN_LEDGER_WS_PORT` | the ledger's gRPC port + 1 | as the ledger reads it |
| `CAIRN_ENVOY_DESCRIPTOR` | `build/cairn.binpb` in the source tree | descriptor set |
| `CAIRN_ENVOY_CONFIG` | `<CAIRN_RUN_DIR>/envoy.yaml` | where the rendered config is written |
| `CAIRN_ENVOY_CONCURRENCY`, `CAIRN_ENVOY_LOG_LEVEL` | `2`, `warning` | Envoy's flags |
| `CAIRN_ENVOY_DRAIN_SECONDS` | `5` | Envoy's `--drain-time-s` (the preStop hook drains this long) |
| `CAIRN_ENVOY_ADMIN_HOST` | `127.0.0.1` | the admin interface's address (it can stop Envoy) |
| `CAIRN_GRPC_MAX_MESSAGE_BYTES` | `67108864` | the transcoder's request/response body limit |

Arguments after the module name are passed on to Envoy, e.g. `--mode validate` checks the config.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cairn.runtime.settings import DEFAULT_PORTS, Settings
from cairn.stack.drain import envoy_drain_argv
from cairn.stack.envoy_config import EdgeLimits, EnvoyLayout, render
from cairn.stack.launcher import ACCESS_LOG_FLUSH, DESCRIPTOR, StackError, envoy_binary

ENVOY_LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical", "off")
# A DNS name (e.g. `cairn-auth.ns.svc.cluster.local`) or a dotted IPv4 address.
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


class EdgeConfigError(ValueError):
    """An environment variable the edge needs is malformed; the message names it."""


def parse_address(name: str, raw: str) -> tuple[str, int]:
    """Split `host:port` from the variable `name`, rejecting what Envoy could not connect to."""
    host, sep, port_text = raw.strip().rpartition(":")
    if not sep or not host:
        raise EdgeConfigError(f"{name} must be host:port, got {raw!r}")
    if not _HOST.match(host):
        raise EdgeConfigError(f"{name} has an invalid host {host!r} (a DNS name or IPv4 address)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise EdgeConfigError(f"{name} has an invalid port {port_text!r} (1-65535)")
    return host, int(port_text)


def _port(name: str, value: int) -> int:
    if not 1 <= value <= 65535:
        raise EdgeConfigError(f"{name} must be a port between 1 and 65535, got {value}")
    return value


@dataclass(frozen=True)
class EdgeSettings:
    """Everything needed to render the config and start Envoy, read once from the environment."""

    layout: EnvoyLayout
    config_path: Path
    concurrency: int
    log_level: str
    drain_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EdgeSettings:
        try:
            settings = Settings.from_env(env)
        except ValueError as err:
            raise EdgeConfigError(str(err)) from None
        raw_concurrency = env.get("CAIRN_ENVOY_CONCURRENCY") or "2"
        if not raw_concurrency.isdigit() or int(raw_concurrency) < 1:
            raise EdgeConfigError(
                f"CAIRN_ENVOY_CONCURRENCY must be a whole number of at least 1, "
                f"got {raw_concurrency!r}"
            )
        concurrency = int(raw_concurrency)
        log_level = (env.get("CAIRN_ENVOY_LOG_LEVEL") or "warning").lower()
        if log_level not in ENVOY_LOG_LEVELS:
            raise EdgeConfigError(
                f"CAIRN_ENVOY_LOG_LEVEL must be one of {', '.join(ENVOY_LOG_LEVELS)}, "
                f"got {log_level!r}"
            )
        upstreams = {}
        for service in DEFAULT_PORTS:
            variable = f"CAIRN_{service.upper()}_ADDR"
            raw = env.get(variable) or f"127.0.0.1:{settings.grpc_port(service)}"
            upstreams[service] = parse_address(variable, raw)
        raw_ws = env.get("CAIRN_LEDGER_WS_ADDR")
        if raw_ws:
            ledger_ws = parse_address("CAIRN_LEDGER_WS_ADDR", raw_ws)
        else:
            # The ledger's own default (cairn.ledger.streams.StreamSettings): gRPC port + 1.
            ledger_host, ledger_port = upstreams["ledger"]
            raw_ws_port = env.get("CAIRN_LEDGER_WS_PORT") or str(ledger_port + 1)
            ledger_ws = parse_address("CAIRN_LEDGER_WS_PORT", f"{ledger_host}:{raw_ws_port}")
        descriptor = Path(env.get("CAIRN_ENVOY_DESCRIPTOR") or DESCRIPTOR)
        if not descriptor.is_file():
            raise EdgeConfigError(
                f"CAIRN_ENVOY_DESCRIPTOR: no descriptor set at {descriptor} (run `make proto`)"
            )
        if settings.grpc_max_message_bytes < 1:
            raise EdgeConfigError("CAIRN_GRPC_MAX_MESSAGE_BYTES must be positive")
        otlp = settings.otlp_endpoint
        layout = EnvoyLayout(
            bind_host=settings.bind_host,
            http_port=_port("CAIRN_HTTP_PORT", settings.http_port),
            admin_port=_port("CAIRN_ENVOY_ADMIN_PORT", settings.envoy_admin_port),
            descriptor_path=descriptor.resolve(),
            upstreams=upstreams,
            max_body_bytes=settings.grpc_max_message_bytes,
            ledger_ws=ledger_ws,
            stats_port=_port("CAIRN_ENVOY_STATS_PORT", settings.envoy_stats_port),
            otlp_collector=parse_address("CAIRN_OTLP_ENDPOINT", otlp) if otlp else None,
            trace_sample_ratio=settings.trace_sample_ratio,
            admin_host=settings.envoy_admin_host,
            limits=EdgeLimits.from_settings(settings),
        )
        config_path = Path(env.get("CAIRN_ENVOY_CONFIG") or settings.run_dir / "envoy.yaml")
        return cls(layout, config_path, concurrency, log_level, settings.envoy_drain_seconds)


def write_config(settings: EdgeSettings) -> Path:
    """Render envoy/envoy.yaml.in for these settings and write it where Envoy will read it."""
    settings.config_path.parent.mkdir(parents=True, exist_ok=True)
    settings.config_path.write_text(render(settings.layout))
    return settings.config_path


def envoy_argv(binary: str, settings: EdgeSettings, extra: Sequence[str] = ()) -> list[str]:
    # Hot restart needs shared memory and a parent process; a pod restarts by replacement instead.
    return [
        binary, "-c", str(settings.config_path.resolve()), "--disable-hot-restart",
        "--concurrency", str(settings.concurrency), "-l", settings.log_level,
        # The preStop hook drains (cairn.stack.drain): every connection told to close at once.
        *envoy_drain_argv(settings.drain_seconds), *ACCESS_LOG_FLUSH, *extra,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Render the config and exec Envoy; returns only when that is impossible."""
    extra = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = EdgeSettings.from_env(os.environ)
        write_config(settings)
        command = envoy_argv(envoy_binary(), settings, extra)
    except (EdgeConfigError, StackError, OSError) as err:
        print(f"cairn.stack.edge: {err}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
