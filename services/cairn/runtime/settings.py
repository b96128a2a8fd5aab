"""Settings for every Cairn process, read once from the environment (documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cairn.runtime.envvars import choice, flag, integer, positive_int, positive_number, ratio
from cairn.runtime.redis import RedisTarget

# Below the kernel's ephemeral range (32768-60999 on Linux), so that no client's own local port
# can collide with a service's while that service restarts (docs/faults.md).
DEFAULT_PORTS = {"project": 20051, "component": 20052, "auth": 20053, "ledger": 20054}


# A service's Prometheus scrape port defaults to its gRPC port + this (20151-20154), so replicas
# and side-by-side stacks on one host, which differ in gRPC ports, never collide on it.
METRICS_PORT_OFFSET = 100


@dataclass(frozen=True)
class Settings:
    """One immutable settings object; `from_env` is the only place that reads os.environ."""

    bind_host: str = "127.0.0.1"
    http_port: int = 8080
    envoy_admin_port: int = 9901
    # Envoy's admin interface answers only here (it can drain and stop Envoy): loopback.
    envoy_admin_host: str = "127.0.0.1"
    grpc_ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    # Where Redis is: one server, a Sentinel-managed primary or a Cluster (CAIRN_REDIS_*).
    redis: RedisTarget = field(default_factory=RedisTarget)
    run_dir: Path = Path(".run")
    log_level: str = "info"
    log_format: str = "json"
    root_token: str = ""
    root_account_id: str = "root"
    root_account_email: str = "root@cairn.local"
    # Key for the HMAC that services use to trust the principal header set by Envoy's ext_authz.
    internal_secret: str = ""
    # Explicit "host:port" per service (CAIRN_<SERVICE>_ADDR); absent means bind_host:grpc port.
    addresses: Mapping[str, str] = field(default_factory=dict)
    grpc_max_message_bytes: int = 64 << 20
    shutdown_grace_seconds: float = 5.0
    # A Redis command slower than this fails as UNAVAILABLE (docs/faults.md).
    redis_timeout_seconds: float = 5.0
    # How often a service checks its dependencies (Redis, blob store) for its readiness health.
    readiness_interval_seconds: float = 1.0
    # "uvloop" (libuv: cheaper socket I/O and callbacks) or "asyncio" (the standard library's).
    event_loop: str = "uvloop"
    # Observability (docs/observability.md): Prometheus scrape ports, Envoy's stats listener,
    # and OTLP/gRPC trace export ("host:port"; empty: tracing off).
    metrics_enabled: bool = True
    metrics_ports: Mapping[str, int] = field(default_factory=lambda: {
        name: port + METRICS_PORT_OFFSET for name, port in DEFAULT_PORTS.items()})
    envoy_stats_port: int = 9902  # the admin port + 1 unless set
    otlp_endpoint: str = ""
    trace_sample_ratio: float = 1.0
    # `make run`'s supervisor: a child exiting this many times within the window stops the stack.
    restart_limit: int = 5
    restart_window_seconds: float = 60.0
    # How long Envoy drains open connections on shutdown before it is stopped.
    envoy_drain_seconds: float = 5.0
    # Limits on client JSON (cairn.runtime.jsonbody), checked before any other work.
    json_max_bytes: int = 16 << 20
    json_max_depth: int = 128
    json_max_number_chars: int = 100
    json_max_string_chars: int = 1 << 20
    # Envoy's bounds on slow and idle clients, and on open connections (docs/hardening.md).
    envoy_headers_timeout_seconds: int = 10
    envoy_idle_timeout_seconds: int = 60
    envoy_request_timeout_seconds: int = 60
    envoy_transfer_timeout_seconds: int = 900
    envoy_stream_timeout_seconds: int = 86_400
    envoy_max_connections: int = 4096

    def grpc_port(self, service: str) -> int:
        return self.grpc_ports[service]

    def metrics_port(self, service: str) -> int:
        return self.metrics_ports[service]

    def address(self, service: str) -> str:
        return self.addresses.get(service) or f"{self.bind_host}:{self.grpc_ports[service]}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        ports = {
            name: integer(env, f"CAIRN_{name.upper()}_GRPC_PORT", default)
            for name, default in DEFAULT_PORTS.items()
        }
        return cls(
            bind_host=env.get("CAIRN_BIND_HOST", "127.0.0.1"),
            http_port=integer(env, "CAIRN_HTTP_PORT", 8080),
            envoy_admin_port=integer(env, "CAIRN_ENVOY_ADMIN_PORT", 9901),
            envoy_admin_host=env.get("CAIRN_ENVOY_ADMIN_HOST", "") or "127.0.0.1",
            grpc_ports=ports,
            redis=RedisTarget.from_env(env),
            run_dir=Path(env.get("CAIRN_RUN_DIR", ".run")),
            log_level=env.get("CAIRN_LOG_LEVEL", "info").lower(),
            log_format=env.get("CAIRN_LOG_FORMAT", "json").lower(),
            root_token=env.get("CAIRN_ROOT_TOKEN", ""),
            root_account_id=env.get("CAIRN_ROOT_ACCOUNT_ID", "root"),
            root_account_email=env.get("CAIRN_ROOT_ACCOUNT_EMAIL", "root@cairn.local"),
            internal_secret=env.get("CAIRN_INTERNAL_SECRET", ""),
            addresses={
                name: env[f"CAIRN_{name.upper()}_ADDR"]
                for name in DEFAULT_PORTS
                if env.get(f"CAIRN_{name.upper()}_ADDR")
            },
            grpc_max_message_bytes=integer(env, "CAIRN_GRPC_MAX_MESSAGE_BYTES", 64 << 20),
            shutdown_grace_seconds=positive_number(env, "CAIRN_SHUTDOWN_GRACE_SECONDS", 5.0),
            redis_timeout_seconds=positive_number(env, "CAIRN_REDIS_TIMEOUT_SECONDS", 5.0),
            readiness_interval_seconds=positive_number(
                env, "CAIRN_READINESS_INTERVAL_SECONDS", 1.0),
            event_loop=choice(env, "CAIRN_EVENT_LOOP", ("uvloop", "asyncio")),
            metrics_enabled=flag(env, "CAIRN_METRICS_ENABLED", True),
            metrics_ports={
                name: integer(env, f"CAIRN_{name.upper()}_METRICS_PORT", port + METRICS_PORT_OFFSET)
                for name, port in ports.items()
            },
            envoy_stats_port=integer(env, "CAIRN_ENVOY_STATS_PORT",
                                  integer(env, "CAIRN_ENVOY_ADMIN_PORT", 9901) + 1),
            otlp_endpoint=env.get("CAIRN_OTLP_ENDPOINT", "").strip(),
            trace_sample_ratio=ratio(env, "CAIRN_TRACE_SAMPLE_RATIO", 1.0),
            restart_limit=integer(env, "CAIRN_RESTART_LIMIT", 5),
            restart_window_seconds=positive_number(env, "CAIRN_RESTART_WINDOW_SECONDS", 60.0),
            envoy_drain_seconds=positive_number(env, "CAIRN_ENVOY_DRAIN_SECONDS", 5.0),
            json_max_bytes=positive_int(env, "CAIRN_JSON_MAX_BYTES", 16 << 20),
            json_max_depth=positive_int(env, "CAIRN_JSON_MAX_DEPTH", 128),
            json_max_number_chars=positive_int(env, "CAIRN_JSON_MAX_NUMBER_CHARS", 100),
            json_max_string_chars=positive_int(env, "CAIRN_JSON_MAX_STRING_CHARS", 1 << 20),
            envoy_headers_timeout_seconds=positive_int(
                env, "CAIRN_ENVOY_HEADERS_TIMEOUT_SECONDS", 10),
            envoy_idle_timeout_seconds=positive_int(env, "CAIRN_ENVOY_IDLE_TIMEOUT_SECONDS", 60),
            envoy_request_timeout_seconds=positive_int(
                env, "CAIRN_ENVOY_REQUEST_TIMEOUT_SECONDS", 60),
            envoy_transfer_timeout_seconds=positive_int(
                env, "CAIRN_ENVOY_TRANSFER_TIMEOUT_SECONDS", 900),
            envoy_stream_timeout_seconds=positive_int(
                env, "CAIRN_ENVOY_STREAM_TIMEOUT_SECONDS", 86_400),
            envoy_max_connections=positive_int(env, "CAIRN_ENVOY_MAX_CONNECTIONS", 4096),
        )

    @property
    def redis_url(self) -> str:
        """The one server's URL; empty in Sentinel and Cluster modes."""
        return self.redis.url

    def require(self, *names: str) -> None:
        """Fail fast, naming the environment variable, when a setting a service needs is empty."""
        env_names = {
            "redis": "CAIRN_REDIS_URL (or CAIRN_REDIS_SENTINELS, CAIRN_REDIS_CLUSTER_NODES)",
            "redis_url": "CAIRN_REDIS_URL",
            "internal_secret": "CAIRN_INTERNAL_SECRET",
            "root_token": "CAIRN_ROOT_TOKEN",
        }
        missing = [env_names.get(n, n) for n in names if not getattr(self, n)]
        if missing:
            raise SystemExit(f"missing required setting(s): {', '.join(missing)}")
