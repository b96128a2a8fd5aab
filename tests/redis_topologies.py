"""Real highly available Redis topologies from the project's own redis-server binary.

`sentinel_setup` starts a primary, a replica and three Sentinels (quorum 2) monitoring them;
`cluster_setup` starts three primaries and joins them into a Redis Cluster (slots split evenly),
with plain CLUSTER commands, so no redis-cli is needed. Every process binds loopback on a free
port, writes only under the given directory, and is stopped by its PID.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cairn.stack.launcher import free_port, redis_server_binary

MASTER_NAME = "cairn-primary"
CLUSTER_SLOTS = 16384


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, fixed in Redis 6) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        time.sleep(0.05)


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Topology:
    servers: list[Server] = field(default_factory=list)

    def start(self, directory: Path, name: str, *args: str, config_lines: tuple[str, ...] = (),
              cluster: bool = False) -> Server:
        port = cluster_port() if cluster else free_port()
        data = directory / name
        data.mkdir(parents=True)
        log = data / "server.log"
        config = data / "redis.conf"
        # Sentinel rewrites its config file, so every server gets one of its own.
        config.write_text("\n".join([
            "bind 127.0.0.1", f"port {port}", f'dir "{data}"', 'save ""', *config_lines, ""]))
        with log.open("wb") as out:
            process = subprocess.Popen([redis_server_binary(), str(config), *args],
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        server = Server(port, process, log)
        self.servers.append(server)

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server {name} exited: {log.read_text()[-2000:]}")
            return bool(server.client().ping())

        wait_for(answers, f"redis-server on port {port} answers")
        return server

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


@dataclass
class SentinelSetup:
    primary: Server
    replica: Server
    sentinels: list[Server]

    @property
    def sentinel_addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def current_primary_port(self) -> int:
        _host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)


@contextmanager
def sentinel_setup(directory: Path) -> Iterator[SentinelSetup]:
    topology = Topology()
    try:
        primary = topology.start(directory, "primary", "--appendonly", "yes")
        replica = topology.start(directory, "replica", "--appendonly", "yes",
                                 "--replicaof", "127.0.0.1", str(primary.port))
        wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up",
                 "the replica syncs")
        sentinels = []
        for n in range(3):
            sentinel = topology.start(directory, f"sentinel-{n}", "--sentinel", config_lines=(
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary.port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
                f"sentinel failover-timeout {MASTER_NAME} 10000",
            ))
            sentinels.append(sentinel)
        setup = SentinelSetup(primary, replica, sentinels)
        for sentinel in sentinels:  # each Sentinel knows the replica and the others
            wait_for(lambda s=sentinel: len(s.client().sentinel_slaves(MASTER_NAME)) == 1
                     and len(s.client().sentinel_sentinels(MASTER_NAME)) == 2,
                     "the Sentinels discover the replica and each other")
        yield setup
    finally:
        topology.stop()


@dataclass
class ClusterSetup:
    primaries: list[Server]

    @property
    def node_addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.primaries)


@contextmanager
def cluster_setup(directory: Path, size: int = 3) -> Iterator[ClusterSetup]:
    topology = Topology()
    try:
        primaries = [
            topology.start(directory, f"node-{n}", "--cluster-enabled", "yes",
                           "--cluster-config-file", "nodes.conf",
                           "--cluster-node-timeout", "5000", "--appendonly", "yes", cluster=True)
            for n in range(size)
        ]
        share = CLUSTER_SLOTS // size
        for n, node in enumerate(primaries):
            last = CLUSTER_SLOTS if n == size - 1 else (n + 1) * share
            node.client().execute_command("CLUSTER ADDSLOTS", *range(n * share, last))
        for node in primaries[1:]:
            primaries[0].client().execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        for node in primaries:
            wait_for(lambda n=node: n.client().cluster("INFO")["cluster_state"] == "ok"
                     and int(n.client().cluster("INFO")["cluster_known_nodes"]) == size,
                     "the cluster forms")
        yield ClusterSetup(primaries)
    finally:
        topology.stop()
