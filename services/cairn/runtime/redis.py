"""Redis connections: one asyncio client per process, from CAIRN_REDIS_URL, and what an outage is.

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
import time
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.cluster import READ_COMMANDS
from redis.exceptions import BusyLoadingError, ConnectionError, ReadOnlyError, TimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from cairn.runtime.metrics import LATENCY_BUCKETS, recording

# Errors that mean "Redis cannot serve right now", not "the request was wrong": unreachable,
# reset, timed out, still loading (a ConnectionError), pool exhausted, or a replica that lost its
# master (read-only). Issue 12 adds Sentinel's and Cluster's transient errors here.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, ReadOnlyError)

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
    return _timed(command) if recording() else _UNMEASURED


@contextlib.contextmanager
def _timed(command: object) -> Iterator[None]:
    name = command.decode() if isinstance(command, bytes) else str(command)
    started = time.perf_counter()
    try:
        yield
    except Exception as err:
        COMMAND_ERRORS.labels(name.upper(), type(err).__name__).inc()
        raise
    finally:
        COMMAND_SECONDS.labels(name.upper()).observe(time.perf_counter() - started)


class Redis(aioredis.Redis):
    """redis-py's asyncio client, retrying a read-only command once on a dropped connection, and
    timing and counting every command in the cairn_redis_* metrics."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        with _measured(args[0]):
            try:
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
            except BusyLoadingError:
                raise  # already retried with backoff by the connection's Retry
            except ConnectionError:
                if not _read_only(args[0]):
                    raise
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class Pipeline(aioredis.client.Pipeline):
    """A pipeline whose round trip is measured as one command, MULTI or PIPELINE."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        with _measured("MULTI" if self.is_transaction else "PIPELINE"):
            return await super().execute(raise_on_error)


def _read_only(command: object) -> bool:
    name = command.decode() if isinstance(command, bytes) else str(command)
    return name.upper() in READ_COMMANDS


def connect(
    url: str,
    *,
    timeout_seconds: float = 5.0,
    max_connections: int | None = None,
    wait_seconds: float | None = None,
) -> Redis:
    """A client for `url`; commands that take longer than `timeout_seconds` fail (UNAVAILABLE).

    With `wait_seconds`, the pool holds at most `max_connections` and a command waits that long
    for a free one (a `BlockingConnectionPool`); otherwise the pool grows as needed.
    """
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
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    pool: aioredis.ConnectionPool
    if wait_seconds is not None:
        pool = aioredis.BlockingConnectionPool.from_url(url, timeout=wait_seconds, **options)
    else:
        pool = aioredis.ConnectionPool.from_url(url, **options)
    return Redis(connection_pool=pool)


def is_unavailable(err: BaseException) -> bool:
    """Whether `err` means Redis could not serve (an outage), not a bug or a bad request."""
    return isinstance(err, UNAVAILABLE_ERRORS)
