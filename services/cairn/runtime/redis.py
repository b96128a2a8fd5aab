"""Redis connections: one asyncio client per process, from the CAIRN_REDIS_* settings, and what an
outage is.

Where Redis is (`RedisTarget`, docs/redis.md): one server by URL (`redis://`, `rediss://` for
TLS); a primary that Redis Sentinel manages (`CAIRN_REDIS_SENTINELS`: the client asks the
Sentinels for the primary and asks again after a failover); or a Redis Cluster
(`CAIRN_REDIS_CLUSTER_NODES`: redis-py's cluster client follows the slot map and its changes).
TLS, with a CA file and an optional client certificate, applies to every server and Sentinel.
Cairn's keys are Cluster-safe: each service's keys share one hash tag (`cairn:{auth}:...`), so
every script, transaction and multi-key read stays in one slot.

With `CAIRN_REDIS_REPLICA_ACKS=N`, every write is acknowledged only once N replicas have it
(`WAIT`): a failover that promotes a replica then loses no write a caller saw succeed. A write
the replicas did not confirm in time fails as UNAVAILABLE (it may or may not survive a failover,
like any write whose answer was lost).

The failure policy (docs/faults.md), built on redis-py's own `Retry`, pool checks and timeouts:

- A command Redis refused because it is still loading its data (`BusyLoadingError`) did not run,
  so it is retried with jittered exponential backoff: a restarted Redis causes no burst of errors.
- The pool checks a pooled connection before handing it out and reconnects one the server closed.
  If a connection still turns out to be dropped mid-command, a read-only command is retried once
  on a fresh connection; anything else is raised: a write may or may not have run, and only the
  caller can say whether repeating it is safe.
- A refused connection, a reset or a timeout is raised at once (no waiting through an outage); the
  server interceptor answers it as UNAVAILABLE / 503 (`UNAVAILABLE_ERRORS`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, urlsplit

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.cluster import READ_COMMANDS
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from redis.maint_notifications import MaintNotificationsConfig

from cairn.runtime.envvars import count, flag
from cairn.runtime.metrics import LATENCY_BUCKETS, recording


class ReplicaAckTimeout(RedisError):
    """A write reached the primary, but not the required replicas in time."""


# Errors that mean "Redis cannot serve right now", not "the request was wrong": unreachable,
# reset, timed out, still loading (a ConnectionError), pool exhausted, a replica that lost its
# master (read-only), no primary known to Sentinel (MasterNotFoundError is a ConnectionError),
# a primary down or a slot unserved in a Cluster, a slot migrating (TRYAGAIN), and a write the
# replicas did not confirm.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError, TimeoutError, ReadOnlyError, MasterDownError, ClusterDownError,
    TryAgainError, ReplicaAckTimeout,
)



def _closed_transport(err: BaseException) -> bool:
    """uvloop's answer to a write on a connection the peer just reset: a RuntimeError ("unable
    to perform operation on <TCPTransport closed=True ...>; the handler is closed") where the
    standard event loop gives an OSError, which redis-py turns into a ConnectionError."""
    return isinstance(err, RuntimeError) and "the handler is closed" in str(err)


def _as_connection_error(err: RuntimeError) -> RedisError:
    return ConnectionError(f"Connection closed by server ({err})")


# While Redis loads its AOF it answers -LOADING; retry that for up to ~2 s in all.
LOADING_RETRIES = 7
LOADING_BACKOFF = ExponentialWithJitterBackoff(base=0.02, cap=0.5)
# A connect to a live host is fast; past this the host is gone or black-holed.
CONNECT_TIMEOUT_SECONDS = 2.0


COMMAND_SECONDS = Histogram(
    "cairn_redis_command_seconds",
    "Time of Redis commands (scripts as EVALSHA, pipelines as PIPELINE/MULTI), by command.",
    ["command"], buckets=LATENCY_BUCKETS,
)
COMMAND_ERRORS = Counter(
    "cairn_redis_command_errors", "Failed Redis commands, by command and error.",
    ["command", "error"],
)


_UNMEASURED = contextlib.nullcontext()


def _measured(command: object) -> contextlib.AbstractContextManager[None]:
    """Times and counts `command` in the cairn_redis_* metrics while metrics are recorded."""
    return _Timed(command) if recording() else _UNMEASURED


# command as sent (bytes or str) -> its metric name and its histogram child: `labels()` takes a
# lock and formats the labels on every call. Command names are a small fixed set.
_COMMAND_SECONDS: dict[object, tuple[str, Any]] = {}


class _Timed:
    """One command's timing (a class, not a generator context manager: ~4 µs less per command)."""

    __slots__ = ("_name", "_seconds", "_started")

    def __init__(self, command: object) -> None:
        known = _COMMAND_SECONDS.get(command)
        if known is None:
            name = _name(command)
            known = _COMMAND_SECONDS[command] = (name, COMMAND_SECONDS.labels(name))
        self._name: str = known[0]
        self._seconds: Any = known[1]
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, kind: Any, err: BaseException | None, traceback: Any) -> None:
        if isinstance(err, Exception):
            COMMAND_ERRORS.labels(self._name, type(err).__name__).inc()
        self._seconds.observe(time.perf_counter() - self._started)


# Commands after which no replica acknowledgement is awaited: they write no data.
_NO_ACK_COMMANDS = frozenset({"PING", "WAIT", "PUBLISH", "SCRIPT", "CLIENT", "INFO", "SELECT",
                              "AUTH", "HELLO", "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH"})


def _name(command: object) -> str:
    return (command.decode() if isinstance(command, bytes) else str(command)).upper()


def _read_only(command: object) -> bool:
    return _name(command) in READ_COMMANDS


def _writes(command: object) -> bool:
    name = _name(command).split(" ", 1)[0]
    return name not in READ_COMMANDS and name not in _NO_ACK_COMMANDS


async def _await_replicas(client: Any, connection: Connection, replicas: int,
                          timeout_ms: int) -> None:
    """WAIT on the connection that wrote; ReplicaAckTimeout when too few replicas confirm."""
    await connection.send_command("WAIT", replicas, timeout_ms)
    acked = int(await client.parse_response(connection, "WAIT"))
    if acked < replicas:
        raise ReplicaAckTimeout(
            f"a write was confirmed by {acked} of {replicas} replica(s) in {timeout_ms} ms")


class Pipeline(aioredis.client.Pipeline):
    """redis-py's pipeline, measured as one command (MULTI or PIPELINE); one that writes awaits
    the replica acknowledgements."""

    replica_acks = 0
    replica_ack_timeout_ms = 0

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        with _measured("MULTI" if self.is_transaction else "PIPELINE"):
            try:
                return await super().execute(raise_on_error)
            except RuntimeError as err:
                if not _closed_transport(err):
                    raise
                raise _as_connection_error(err) from err

    async def _execute_transaction(self, connection: Connection, commands: Any,
                                   raise_on_error: bool) -> Any:
        result = await super()._execute_transaction(connection, commands, raise_on_error)
        if self.replica_acks and any(_writes(args[0]) for args, _ in commands):
            await _await_replicas(self, connection, self.replica_acks,
                                  self.replica_ack_timeout_ms)
        return result

    async def _execute_pipeline(self, connection: Connection, commands: Any,
                                raise_on_error: bool) -> Any:
        result = await super()._execute_pipeline(connection, commands, raise_on_error)
        if self.replica_acks and any(_writes(args[0]) for args, _ in commands):
            await _await_replicas(self, connection, self.replica_acks,
                                  self.replica_ack_timeout_ms)
        return result


class Redis(aioredis.Redis):
    """redis-py's asyncio client, retrying a read-only command once on a dropped connection,
    timing and counting every command in the cairn_redis_* metrics, and (with `replica_acks`)
    confirming every write on that many replicas before returning."""

    replica_acks = 0
    replica_ack_timeout_ms = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        with _measured(args[0]):
            try:
                return await self._execute_once(*args, **options)
            except BusyLoadingError:
                raise  # already retried with backoff by the connection's Retry
            except ConnectionError:
                if not _read_only(args[0]):
                    raise
                return await self._execute_once(*args, **options)

    async def _execute_once(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except RuntimeError as err:
            if not _closed_transport(err):
                raise
            raise _as_connection_error(err) from err

    async def _send_command_parse_response(self, conn: Connection, command_name: Any,
                                           *args: Any, **options: Any) -> Any:
        result = await super()._send_command_parse_response(  # type: ignore[no-untyped-call]
            conn, command_name, *args, **options)
        if self.replica_acks and _writes(command_name):
            await _await_replicas(self, conn, self.replica_acks, self.replica_ack_timeout_ms)
        return result

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.replica_acks = self.replica_acks
        pipe.replica_ack_timeout_ms = self.replica_ack_timeout_ms
        return pipe


def _addresses(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    found = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{name} must be host:port[,host:port...], got {item!r}")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is and how to reach it (read from the CAIRN_REDIS_* settings)."""

    # One server: redis://[user:password@]host:port/db, rediss:// (TLS), unix://.
    url: str = ""
    # A Sentinel-managed primary: the Sentinels' addresses and the primary's name there.
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_username: str = ""
    sentinel_password: str = ""
    # A Redis Cluster: some of its nodes; the rest are discovered.
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    # Credentials for the data servers in every mode (they replace a URL's own when set), and
    # the database (Sentinel mode; a URL names its own).
    username: str = ""
    password: str = ""
    db: int = 0
    # TLS to every server and Sentinel (a rediss:// URL turns it on too).
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Writes wait for this many replicas (WAIT), for at most replica_ack_timeout_ms.
    replica_acks: int = 0
    replica_ack_timeout_ms: int = 2000

    def __post_init__(self) -> None:
        chosen = [bool(self.url), bool(self.sentinels), bool(self.cluster_nodes)]
        if sum(chosen) > 1:
            raise ValueError("set only one of CAIRN_REDIS_URL, CAIRN_REDIS_SENTINELS and "
                             "CAIRN_REDIS_CLUSTER_NODES")
        if self.cluster_nodes and self.db:
            raise ValueError("CAIRN_REDIS_DB: a Redis Cluster has only database 0")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("set both CAIRN_REDIS_TLS_CERT_FILE and CAIRN_REDIS_TLS_KEY_FILE, "
                             "or neither")
        if self.url and urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("CAIRN_REDIS_URL must be a redis://, rediss:// or unix:// URL")

    @property
    def mode(self) -> str:
        if self.sentinels:
            return "sentinel"
        if self.cluster_nodes:
            return "cluster"
        return "standalone"

    def __bool__(self) -> bool:
        """Whether any Redis is configured (else `make run` starts an embedded one)."""
        return bool(self.url or self.sentinels or self.cluster_nodes)

    def describe(self) -> str:
        """Where Redis is, without credentials (for logs and banners)."""
        if self.sentinels:
            nodes = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {self.sentinel_master} via {nodes}"
        if self.cluster_nodes:
            return "cluster via " + ",".join(f"{h}:{p}" for h, p in self.cluster_nodes)
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return parts._replace(netloc=netloc, query="").geturl()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RedisTarget:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, "").strip()

        return cls(
            url=get("CAIRN_REDIS_URL"),
            sentinels=_addresses("CAIRN_REDIS_SENTINELS", get("CAIRN_REDIS_SENTINELS")),
            sentinel_master=get("CAIRN_REDIS_SENTINEL_MASTER") or "mymaster",
            sentinel_username=get("CAIRN_REDIS_SENTINEL_USERNAME"),
            sentinel_password=env.get("CAIRN_REDIS_SENTINEL_PASSWORD", ""),
            cluster_nodes=_addresses("CAIRN_REDIS_CLUSTER_NODES", get("CAIRN_REDIS_CLUSTER_NODES")),
            username=get("CAIRN_REDIS_USERNAME"),
            password=env.get("CAIRN_REDIS_PASSWORD", ""),
            db=count(env, "CAIRN_REDIS_DB", 0),
            tls=flag(env, "CAIRN_REDIS_TLS", False),
            tls_ca_file=get("CAIRN_REDIS_TLS_CA_FILE"),
            tls_cert_file=get("CAIRN_REDIS_TLS_CERT_FILE"),
            tls_key_file=get("CAIRN_REDIS_TLS_KEY_FILE"),
            replica_acks=count(env, "CAIRN_REDIS_REPLICA_ACKS", 0),
            replica_ack_timeout_ms=count(env, "CAIRN_REDIS_REPLICA_ACK_TIMEOUT_MS", 2000),
        )

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.url.startswith("rediss://")

    def tls_options(self) -> dict[str, Any]:
        """redis-py's connection options for TLS (empty without TLS); a URL's scheme or `ssl`
        (Sentinel, Cluster) turns TLS itself on."""
        if not self.uses_tls:
            return {}
        options: dict[str, Any] = {"ssl_cert_reqs": "required"}
        if self.tls_ca_file:
            options["ssl_ca_certs"] = self.tls_ca_file
        if self.tls_cert_file:
            options.update(ssl_certfile=self.tls_cert_file, ssl_keyfile=self.tls_key_file)
        return options

    def credentials(self) -> dict[str, Any]:
        """Username and password for the data servers, when set outside the URL."""
        options: dict[str, Any] = {}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        return options


def connect(
    target: RedisTarget | str,
    *,
    timeout_seconds: float = 5.0,
    max_connections: int | None = None,
    wait_seconds: float | None = None,
) -> Redis:
    """A client for `target`; commands that take longer than `timeout_seconds` fail (UNAVAILABLE).

    With `wait_seconds`, the pool holds at most `max_connections` and a command waits that long
    for a free one (a `BlockingConnectionPool`); otherwise the pool grows as needed. A Cluster
    target gives redis-py's `RedisCluster` (typed as `Redis`: it serves the same commands).
    """
    if isinstance(target, str):
        target = RedisTarget(url=target)
    options: dict[str, Any] = {
        # Values are JSON or binary; callers decode what they need.
        "decode_responses": False,
        "retry": Retry(LOADING_BACKOFF, LOADING_RETRIES, supported_errors=(BusyLoadingError,)),
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": min(timeout_seconds, CONNECT_TIMEOUT_SECONDS),
        "socket_keepalive": True,
        # An idle connection is PINGed before reuse, catching a dead peer the pool check missed.
        "health_check_interval": 30,
        # Off, because with redis-py's default ("auto") its pool no longer checks a pooled
        # connection before handing it out (`maint_notifications_enabled()` returns the truthy
        # "auto"), so after a Redis restart every stale connection failed one command. The
        # notifications are for Redis Enterprise/Cloud maintenance, which Cairn does not use.
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        **target.tls_options(),
    }
    if target.cluster_nodes:
        return cast(Redis, _cluster(target, {**options, **target.credentials()},
                                    max_connections))
    if target.uses_tls and target.sentinels:
        options["ssl"] = True
    if max_connections is not None:
        options["max_connections"] = max_connections
    client: Redis
    if target.sentinels:
        # SentinelConnectionPool cannot wait for a free connection: past max_connections a
        # command fails at once (UNAVAILABLE) instead of waiting `wait_seconds`.
        client = _sentinel_primary(target, options)
    else:
        url = target.url
        if target.tls and url.startswith("redis://"):
            url = "rediss://" + url.removeprefix("redis://")
        if target.username or target.password:
            url = url_with_credentials(url, target.username, target.password)
        pool: aioredis.ConnectionPool
        if wait_seconds is not None:
            pool = aioredis.BlockingConnectionPool.from_url(url, timeout=wait_seconds, **options)
        else:
            pool = aioredis.ConnectionPool.from_url(url, **options)
        client = Redis(connection_pool=pool)
    client.replica_acks = target.replica_acks
    client.replica_ack_timeout_ms = target.replica_ack_timeout_ms
    return client


def _sentinel_primary(target: RedisTarget, options: dict[str, Any]) -> Redis:
    """The primary Sentinel names, found again whenever a connection to it is (re)made.

    redis-py's SentinelConnectionPool asks the Sentinels for the primary on every new
    connection and drops a connection whose server turned into a replica, so the next command
    reaches the promoted primary.
    """
    sentinel_options: dict[str, Any] = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        **target.tls_options(),
        **({"ssl": True} if target.uses_tls else {}),
    }
    if target.sentinel_username:
        sentinel_options["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_options["password"] = target.sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_options, db=target.db, **options,
        **target.credentials())
    return cast(Redis, sentinel.master_for(target.sentinel_master, redis_class=Redis))


def _cluster(target: RedisTarget, options: dict[str, Any],
             max_connections: int | None) -> RedisCluster:
    options = {k: v for k, v in options.items() if k != "health_check_interval"}
    if target.uses_tls:
        options["ssl"] = True
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.cluster_nodes],
        max_connections=max_connections or 100, **options)


def url_with_credentials(url: str, username: str, password: str) -> str:
    """`url` with the given username and password (each kept from the URL when empty)."""
    parts = urlsplit(url)
    user = quote(username, safe="") if username else (parts.username or "")
    secret = quote(password, safe="") if password else (parts.password or "")
    host = parts.netloc.rpartition("@")[2]
    credentials = f"{user}:{secret}@" if user or secret else ""
    return parts._replace(netloc=credentials + host).geturl()


async def adopt_legacy_keys(client: aioredis.Redis, old_prefix: str, new_prefix: str) -> int:
    """Rename every `old_prefix...` key to `new_prefix...` once; the number of keys moved.

    For data written before the keys were hash-tagged (one server; a Cluster starts empty and
    has no SCAN across nodes, so it is skipped). RENAMENX never overwrites a newer key, and a key
    another replica moved first is skipped, so replicas starting together do no harm.
    """
    if isinstance(client, RedisCluster):
        return 0
    moved = 0
    async for key in client.scan_iter(match=old_prefix + "*", count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        try:
            moved += int(await client.renamenx(name, new_prefix + name[len(old_prefix):]))
        except ResponseError:  # renamed meanwhile by another replica
            continue
    return moved


def is_unavailable(err: BaseException) -> bool:
    """Whether `err` means Redis could not serve (an outage), not a bug or a bad request."""
    return isinstance(err, UNAVAILABLE_ERRORS) or _closed_transport(err)
