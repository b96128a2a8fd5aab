"""Two ledger-service processes (`python -m cairn.ledger`) on one Redis and one blob directory.

Each replica interprets commands on its own; the atomic commit in Redis must still let exactly one
contract per key through, and packages uploaded to one replica must be usable on the other.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cairn.ledger.v1 import ledger_service_pb2 as pb
from cairn.stack.launcher import REPO_ROOT, free_port

from .test_ledger_service import ALICE, IOU, bearer, rest_error

SERVICE = "cairn.ledger.v1.LedgerService"


def wait_serving(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ledger replica exited:\n{log.read_text()[-3000:]}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    pytest.fail(f"ledger replica did not start:\n{log.read_text()[-3000:]}")


@pytest.fixture
def replicas(redis_url: str, tmp_path: Path) -> Iterator[list[int]]:
    """Two ledger processes sharing Redis (a fresh database) and the blob directory."""
    import redis as sync_redis

    database = redis_url.rsplit("/", 1)[0] + "/3"
    sync_redis.Redis.from_url(database).flushdb()
    ports = [free_port(), free_port()]
    processes = []
    for index, port in enumerate(ports):
        log = tmp_path / f"ledger-{index}.log"
        env = {
            **os.environ,
            "CAIRN_REDIS_URL": database,
            "CAIRN_INTERNAL_SECRET": "replica-test-secret",
            "CAIRN_LEDGER_GRPC_PORT": str(port),
            "CAIRN_RUN_DIR": str(tmp_path),
            "CAIRN_LOG_LEVEL": "warning",
        }
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "cairn.ledger"], cwd=REPO_ROOT,
                                       env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        processes.append((process, log))
    try:
        for port, (process, log) in zip(ports, processes, strict=True):
            wait_serving(port, process, log)
        yield ports
    finally:
        for process, _ in processes:
            process.terminate()
        for process, _ in processes:
            assert process.wait(15) == 0


async def test_two_replicas_never_both_create_under_one_key(
    replicas: list[int], shared_fixtures: Path
) -> None:
    from cairn.ledger.v1 import ledger_service_pb2_grpc as pb_grpc

    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in replicas]
    stubs: list[pb_grpc.LedgerServiceAsyncStub] = [pb_grpc.LedgerServiceStub(c)
                                                   for c in channels]
    try:
        dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
        await stubs[0].UploadDarFile(pb.UploadDarFileRequest(dar_file=dar), metadata=bearer(ALICE))
        # The second replica learns about the package from Redis on its first miss.
        from google.protobuf import json_format, struct_pb2

        def value(data: dict[str, Any]) -> struct_pb2.Value:
            return json_format.ParseDict(data, struct_pb2.Value())

        on_other = await stubs[1].Create(pb.CreateRequest(template_id="Iou:Iou",
                                                          payload=value(IOU)),
                                         metadata=bearer(ALICE))
        assert on_other.contract.template_id.endswith(":Iou:Iou")

        for round_number in range(5):
            payload = value({"tkParty": "Alice", "tkKey": f"contested-{round_number}",
                             "tkDisclosedTo": []})
            calls = [stubs[i % 2].Create(pb.CreateRequest(template_id="Test:TextKey",
                                                          payload=payload),
                                         metadata=bearer(ALICE))
                     for i in range(30)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            winners = [o for o in outcomes if not isinstance(o, BaseException)]
            losers = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
            assert len(winners) == 1, outcomes
            assert len(losers) == 29
            assert {err.code() for err in losers} == {grpc.StatusCode.ALREADY_EXISTS}
            assert {rest_error(err)[0] for err in losers} == {409}
            # Both replicas see the single winner under the key.
            for stub in stubs:
                fetched = await stub.Fetch(pb.FetchRequest(
                    template_id="Test:TextKey",
                    key=value({"_1": "Alice", "_2": f"contested-{round_number}"})),
                    metadata=bearer(ALICE))
                assert fetched.HasField("contract")
        everything = await stubs[1].Query(pb.QueryRequest(template_ids=["Test:TextKey"]),
                                          metadata=bearer(ALICE))
        assert len(everything.contracts) == 5
    finally:
        for channel in channels:
            await channel.close(None)
