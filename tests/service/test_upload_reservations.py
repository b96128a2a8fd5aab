"""Plan usage counts committed component versions only, even when a component process dies.

Usage is counted under an operation id (applied once, cancellable once) and every upload holds a
reservation until its commit settles it; a sweep gives back what a dead process's reservations
counted and deletes their blobs. Real auth servicer over a socket, real Redis, disk blobs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cairn.blobstore import DiskBlobStore, iter_bytes
from cairn.component.access import ProjectGateway, UsageLedger
from cairn.component.model import ComponentVersion
from cairn.component.service import ComponentService
from cairn.component.store import ComponentStore, ReservationReleased
from cairn.runtime.callers import as_caller
from cairn.runtime.principal import Principal

from .test_auth_internal import SECRET, Internal, internal, usage

__all__ = ["internal"]  # the fixture, used by name


def service() -> tuple[tuple[str, str], ...]:
    """A Cairn service's signed assertion (signed now: they are valid for two minutes)."""
    return as_caller(Principal("component-service-caller"), SECRET)


async def _storage(internal: Internal, account: str) -> tuple[int, int]:
    reply = await internal.stub.RecordComponentUsage(usage(account), metadata=service())
    return reply.usage.component_count, reply.usage.storage_bytes


async def test_an_operation_counts_once_and_cancels_once(internal: Internal) -> None:
    account = await internal.account()
    charge = usage(account, 1, 1_000, 1_000)
    charge.operation_id = "upload-1"
    for _ in range(2):  # a repeated call (a retry) changes nothing
        await internal.stub.RecordComponentUsage(charge, metadata=service())
    assert await _storage(internal, account) == (1, 1_000)
    cancel = usage(account)
    cancel.operation_id, cancel.cancel = "upload-1", True
    for _ in range(2):
        await internal.stub.RecordComponentUsage(cancel, metadata=service())
    assert await _storage(internal, account) == (0, 0)
    # Cancelled first (the charge was still on its way): the late charge is ignored.
    late = usage(account)
    late.operation_id, late.cancel = "upload-2", True
    await internal.stub.RecordComponentUsage(late, metadata=service())
    charge.operation_id = "upload-2"
    await internal.stub.RecordComponentUsage(charge, metadata=service())
    assert await _storage(internal, account) == (0, 0)


def _service(internal: Internal, redis: aioredis.Redis, blobs: DiskBlobStore,
             instance: str) -> ComponentService:
    auth = f"127.0.0.1:{internal.server.port}"
    return ComponentService(
        ComponentStore(redis), blobs, ProjectGateway("127.0.0.1:9", SECRET),
        max_component_bytes=1 << 20, usage=UsageLedger(auth, SECRET), instance=instance,
    )


async def test_a_dead_processs_uploads_are_given_back_and_their_blobs_deleted(
    internal: Internal, redis: aioredis.Redis, tmp_path: Path
) -> None:
    account = await internal.account()
    blobs = DiskBlobStore(tmp_path)
    dead = _service(internal, redis, blobs, "dead")
    alive = _service(internal, redis, blobs, "alive")
    await alive._store.renew_lease("alive", 30)
    caller = Principal(account)
    # Both got as far as counting and storing the blob, then "dead" died (it has no lease).
    orphan = await dead._count(caller, account, "components/c/a.wasm", components=1,
                               storage=100, upload=100)
    running = await alive._count(caller, account, "components/c/b.wasm", storage=50, upload=50)
    for reservation in (orphan, running):
        await blobs.put(reservation.blob_key, iter_bytes(b"\0asm"))
    assert await _storage(internal, account) == (1, 150)

    assert await alive.release_orphans() == 1
    assert await _storage(internal, account) == (0, 50)
    assert not await blobs.exists(orphan.blob_key)
    assert await blobs.exists(running.blob_key)
    assert await alive.release_orphans() == 0, "released once"

    # The dead process's commit, had it come back after all, is refused: nothing half-counted.
    version = ComponentVersion(
        component_id="c", version=0, name="n", project_id="p", owner_account_id=account,
        size=100, sha256="0" * 64, blob_key=orphan.blob_key, created_at="2026-01-01T00:00:00Z",
        component_type="Durable", metadata={}, template_exports=[],
    )
    with pytest.raises(ReservationReleased):
        await dead._store.create(version, reservation=orphan.id)
    # The live upload commits and settles its reservation in the same step.
    committed = replace(version, component_id="d", name="m", blob_key=running.blob_key, size=50)
    assert await alive._store.create(committed, reservation=running.id) is None
    assert await alive._store.orphans("someone-else") == []
