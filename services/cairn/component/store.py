"""Components in Redis, with every version committed atomically by a Lua script.

Keys (prefix `cairn:component`):
- `<p>:<id>:versions`  hash: version number -> the version's JSON record
- `<p>:<id>:latest`    the highest version number
- `<p>:names:<proj>`   hash: component name -> component id (names are unique per project)
- `<p>:in:<proj>`      sorted set of the project's component ids, scored by creation order
- `<p>:created-count`  the counter that scores them

A version becomes visible only through a script that writes its record, moves `latest` and
publishes the event in one step, so a reader never sees half a version, and an event is published
if and only if its version exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from cairn.component.model import ComponentVersion

EVENTS_CHANNEL = "cairn:component:events"

# KEYS: names hash, project set, versions hash, latest key, creation counter.
# ARGV: name, component id, record, channel, event. Returns {1, id} or {0, existing id}.
_CREATE = """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {0, existing} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), ARGV[2])
redis.call('HSET', KEYS[3], '0', ARGV[3])
redis.call('SET', KEYS[4], '0')
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {1, ARGV[2]}
"""

# KEYS: versions hash, latest key. ARGV: new version, record, channel, event.
# Returns -1 when committed, -2 when the component does not exist, else the current latest
# version (someone else committed first; the caller rebuilds on top of it and retries).
_ADD_VERSION = """
local latest = redis.call('GET', KEYS[2])
if not latest then return -2 end
if tonumber(latest) + 1 ~= tonumber(ARGV[1]) then return tonumber(latest) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return -1
"""


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


class ComponentStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "cairn:component") -> None:
        self._r = redis
        self._p = prefix
        self._create = redis.register_script(_CREATE)
        self._add_version = redis.register_script(_ADD_VERSION)

    def _versions_key(self, component_id: str) -> str:
        return f"{self._p}:{component_id}:versions"

    def _latest_key(self, component_id: str) -> str:
        return f"{self._p}:{component_id}:latest"

    def _names_key(self, project_id: str) -> str:
        return f"{self._p}:names:{project_id}"

    def _project_key(self, project_id: str) -> str:
        return f"{self._p}:in:{project_id}"

    async def create(self, first: ComponentVersion, *, reason: str = "create") -> str | None:
        """Commit version 0 of a new component; the existing id when the name is taken."""
        created, component_id = await self._create(
            keys=[
                self._names_key(first.project_id),
                self._project_key(first.project_id),
                self._versions_key(first.component_id),
                self._latest_key(first.component_id),
                # One counter for every project: a project's set is then in creation order.
                f"{self._p}:created-count",
            ],
            args=[
                first.name,
                first.component_id,
                first.to_record(),
                EVENTS_CHANNEL,
                event_payload("ComponentCreated", first, reason),
            ],
        )
        return None if int(created) == 1 else _text(component_id)

    async def add_version(self, version: ComponentVersion, *, reason: str) -> None:
        """Commit `version`, which must follow the current latest; VersionConflict otherwise."""
        result = int(
            await self._add_version(
                keys=[
                    self._versions_key(version.component_id),
                    self._latest_key(version.component_id),
                ],
                args=[
                    version.version,
                    version.to_record(),
                    EVENTS_CHANNEL,
                    event_payload("ComponentVersionCreated", version, reason),
                ],
            )
        )
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
