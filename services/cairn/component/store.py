"""Components in Redis, with every version committed atomically by a Lua script.

Keys (prefix `cairn:{component}`, one hash tag, so every script stays in one Redis Cluster slot):
- `<p>:<id>:versions`  hash: version number -> the version's JSON record
- `<p>:<id>:latest`    the highest version number
- `<p>:names:<proj>`   hash: component name -> component id (names are unique per project)
- `<p>:in:<proj>`      sorted set of the project's component ids, scored by creation order
- `<p>:created-count`  the counter that scores them
- `<p>:reserved`       hash: upload id -> Reservation JSON, for uploads counted against a plan
                       but not yet committed; the commit removes it in the same step
- `<p>:releasing`      hash: reservations a sweep took over from a dead process
- `<p>:instance:<id>`  a live component process's lease (expires unless renewed)

A version becomes visible only through a script that writes its record, moves `latest` and
publishes the event in one step, so a reader never sees half a version, and an event is published
if and only if its version exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from cairn.component.model import ComponentVersion
from cairn.runtime.errors import Unavailable

EVENTS_CHANNEL = "cairn:component:events"

# KEYS: names hash, project set, versions hash, latest key, creation counter, reservations.
# ARGV: name, component id, record, channel, event, reservation id ('' for none).
# Returns {1, id}, {0, existing id}, or {2, ''} when the reservation was released (swept).
_CREATE = """
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[6], ARGV[6]) == 0 then return {2, ''} end
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {0, existing} end
if ARGV[6] ~= '' then redis.call('HDEL', KEYS[6], ARGV[6]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), ARGV[2])
redis.call('HSET', KEYS[3], '0', ARGV[3])
redis.call('SET', KEYS[4], '0')
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {1, ARGV[2]}
"""

# KEYS: versions hash, latest key, reservations.
# ARGV: new version, record, channel, event, reservation id ('' for none).
# Returns -1 when committed, -2 when the component does not exist, -3 when the reservation was
# released (swept), else the current latest version (someone else committed first; the caller
# rebuilds on top of it and retries).
_ADD_VERSION = """
if ARGV[5] ~= '' and redis.call('HEXISTS', KEYS[3], ARGV[5]) == 0 then return -3 end
local latest = redis.call('GET', KEYS[2])
if not latest then return -2 end
if tonumber(latest) + 1 ~= tonumber(ARGV[1]) then return tonumber(latest) end
if ARGV[5] ~= '' then redis.call('HDEL', KEYS[3], ARGV[5]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return -1
"""


# KEYS: reservations, releasing. ARGV: reservation id. Moves it; returns it, or nil if gone.
_TAKE_OVER = """
local reservation = redis.call('HGET', KEYS[1], ARGV[1])
if not reservation then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], reservation)
return reservation
"""


@dataclass(frozen=True)
class Reservation:
    """An upload counted against `owner`'s plan (operation `id`) and not yet committed."""

    id: str
    owner: str
    instance: str  # the component process doing it; '' once it gave up on it
    blob_key: str  # where its WASM goes, to delete if it never commits

    def to_json(self) -> str:
        return json.dumps({"owner": self.owner, "instance": self.instance,
                           "blobKey": self.blob_key})

    @classmethod
    def from_json(cls, reservation_id: str, raw: Any) -> Reservation:
        record = json.loads(raw)
        return cls(reservation_id, record["owner"], record["instance"], record["blobKey"])


class ReservationReleased(Unavailable):
    """The upload's reservation was released by a sweep (its process looked dead, e.g. through a
    Redis outage longer than its lease): nothing was committed, the client may try again."""

    def __init__(self, reservation_id: str) -> None:
        super().__init__("The upload was interrupted; try again")
        self.reservation_id = reservation_id


class VersionConflict(Exception):
    """Another version was committed first; `latest` is the version now current."""

    def __init__(self, latest: int) -> None:
        super().__init__(f"version {latest} was committed concurrently")
        self.latest = latest


class ComponentGone(Exception):
    """The component has no versions (it never existed)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def event_payload(kind: str, version: ComponentVersion, reason: str) -> str:
    """The JSON published on EVENTS_CHANNEL."""
    return json.dumps(
        {
            "type": kind,
            "reason": reason,
            "componentId": version.component_id,
            "version": version.version,
            "componentName": version.name,
            "projectId": version.project_id,
            "componentSize": version.size,
            "createdAt": version.created_at,
        },
        separators=(",", ":"),
    )


PREFIX = "cairn:{component}"
LEGACY_PREFIX = "cairn:component:"  # before the hash tag; renamed once by adopt_legacy_keys


class ComponentStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        self._r = redis
        self._p = prefix
        self._create = redis.register_script(_CREATE)
        self._add_version = redis.register_script(_ADD_VERSION)
        self._take_over = redis.register_script(_TAKE_OVER)
        self._reserved = f"{prefix}:reserved"
        self._releasing = f"{prefix}:releasing"

    def _versions_key(self, component_id: str) -> str:
        return f"{self._p}:{component_id}:versions"

    def _latest_key(self, component_id: str) -> str:
        return f"{self._p}:{component_id}:latest"

    def _names_key(self, project_id: str) -> str:
        return f"{self._p}:names:{project_id}"

    def _project_key(self, project_id: str) -> str:
        return f"{self._p}:in:{project_id}"

    async def create(
        self, first: ComponentVersion, *, reason: str = "create", reservation: str = ""
    ) -> str | None:
        """Commit version 0 of a new component, and settle its `reservation` in the same step;
        the existing id when the name is taken; ReservationReleased if a sweep took it."""
        created, component_id = await self._create(
            keys=[
                self._names_key(first.project_id),
                self._project_key(first.project_id),
                self._versions_key(first.component_id),
                self._latest_key(first.component_id),
                # One counter for every project: a project's set is then in creation order.
                f"{self._p}:created-count",
                self._reserved,
            ],
            args=[
                first.name,
                first.component_id,
                first.to_record(),
                EVENTS_CHANNEL,
                event_payload("ComponentCreated", first, reason),
                reservation,
            ],
        )
        if int(created) == 2:
            raise ReservationReleased(reservation)
        return None if int(created) == 1 else _text(component_id)

    async def add_version(
        self, version: ComponentVersion, *, reason: str, reservation: str = ""
    ) -> None:
        """Commit `version`, which must follow the current latest (VersionConflict otherwise),
        and settle its `reservation` in the same step (ReservationReleased if a sweep took it)."""
        result = int(
            await self._add_version(
                keys=[
                    self._versions_key(version.component_id),
                    self._latest_key(version.component_id),
                    self._reserved,
                ],
                args=[
                    version.version,
                    version.to_record(),
                    EVENTS_CHANNEL,
                    event_payload("ComponentVersionCreated", version, reason),
                    reservation,
                ],
            )
        )
        if result == -3:
            raise ReservationReleased(reservation)
        if result == -2:
            raise ComponentGone(version.component_id)
        if result != -1:
            raise VersionConflict(result)

    async def latest(self, component_id: str) -> ComponentVersion | None:
        latest = await self._r.get(self._latest_key(component_id))
        if latest is None:
            return None
        return await self.version(component_id, int(latest))

    async def version(self, component_id: str, version: int) -> ComponentVersion | None:
        raw = await self._r.hget(self._versions_key(component_id), str(version))
        return None if raw is None else ComponentVersion.from_record(raw)

    async def all_versions(self, component_id: str) -> list[ComponentVersion]:
        """Every version, oldest first."""
        raws = await self._r.hvals(self._versions_key(component_id))
        versions = [ComponentVersion.from_record(raw) for raw in raws]
        return sorted(versions, key=lambda v: v.version)

    async def id_by_name(self, project_id: str, name: str) -> str | None:
        found = await self._r.hget(self._names_key(project_id), name)
        return None if found is None else _text(found)

    async def ids_in_project(self, project_id: str) -> list[str]:
        """The project's component ids, oldest first."""
        return [_text(m) for m in await self._r.zrange(self._project_key(project_id), 0, -1)]

    async def latest_of(self, component_ids: Iterable[str]) -> list[ComponentVersion]:
        """The latest version of each component that has one, in the given order."""
        ids = list(component_ids)
        if not ids:
            return []
        latests = await self._r.mget([self._latest_key(i) for i in ids])
        async with self._r.pipeline(transaction=False) as pipe:
            present = [(i, n) for i, n in zip(ids, latests, strict=True) if n is not None]
            for component_id, latest in present:
                pipe.hget(self._versions_key(component_id), _text(latest))
            raws = await pipe.execute()
        return [ComponentVersion.from_record(raw) for raw in raws if raw is not None]

    # -- reservations: plan usage counted for uploads not yet committed ----------------------

    async def reserve(self, reservation: Reservation) -> None:
        await self._r.hset(self._reserved, reservation.id, reservation.to_json())

    async def unreserve(self, reservation_id: str) -> None:
        """Drop a reservation whose usage was given back (the upload failed)."""
        await self._r.hdel(self._reserved, reservation_id)

    async def abandon(self, reservation: Reservation) -> None:
        """Leave a failed upload's reservation to the next sweep (its usage is still counted)."""
        await self._r.hset(self._reserved, reservation.id,
                           Reservation(reservation.id, reservation.owner, "",
                                       reservation.blob_key).to_json())

    async def renew_lease(self, instance: str, seconds: float) -> None:
        await self._r.set(f"{self._p}:instance:{instance}", b"1", px=int(seconds * 1000))

    async def orphans(self, instance: str) -> list[Reservation]:
        """Reservations whose process is gone (no lease) or gave up, taken over for release;
        with those an earlier sweep took over and did not finish."""
        taken: list[Reservation] = []
        for key, raw in (await self._r.hgetall(self._reserved)).items():
            reservation = Reservation.from_json(_text(key), raw)
            if reservation.instance == instance:
                continue
            if reservation.instance and await self._r.exists(
                    f"{self._p}:instance:{reservation.instance}"):
                continue
            moved = await self._take_over(keys=[self._reserved, self._releasing],
                                          args=[reservation.id])
            if moved is not None:
                taken.append(reservation)
        for key, raw in (await self._r.hgetall(self._releasing)).items():
            if _text(key) not in {r.id for r in taken}:
                taken.append(Reservation.from_json(_text(key), raw))
        return taken

    async def released(self, reservation_id: str) -> None:
        await self._r.hdel(self._releasing, reservation_id)
