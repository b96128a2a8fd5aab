"""Projects in Redis: one JSON record per project, a creation-ordered set of ids per owner."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import redis.asyncio as aioredis

from cairn.project.model import Project

# Atomically return the owner's default project id, creating the project if there is none yet,
# so two concurrent first calls cannot create two default projects.
_ENSURE_DEFAULT = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return ARGV[1]
"""


class ProjectStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "cairn:project") -> None:
        self._r = redis
        self._p = prefix
        self._ensure_default = redis.register_script(_ENSURE_DEFAULT)

    def _key(self, project_id: str) -> str:
        return f"{self._p}:{project_id}"

    def _owned_key(self, account_id: str) -> str:
        return f"{self._p}:owned-by:{account_id}"

    def _default_key(self, account_id: str) -> str:
        return f"{self._p}:default-of:{account_id}"

    async def ensure_default(self, candidate: Project) -> str:
        """The id of the owner's default project; `candidate` is stored if none exists."""
        owner = candidate.owner_account_id
        result = await self._ensure_default(
            keys=[self._default_key(owner), self._key(candidate.id), self._owned_key(owner)],
            args=[candidate.id, json.dumps(candidate.to_record()), time.time()],
        )
        return result.decode() if isinstance(result, bytes) else str(result)

    async def create(self, project: Project) -> None:
        async with self._r.pipeline(transaction=True) as tx:
            tx.set(self._key(project.id), json.dumps(project.to_record()))
            tx.zadd(self._owned_key(project.owner_account_id), {project.id: time.time()})
            await tx.execute()

    async def get(self, project_id: str) -> Project | None:
        raw = await self._r.get(self._key(project_id))
        return None if raw is None else Project.from_record(json.loads(raw))

    async def get_many(self, project_ids: Iterable[str]) -> list[Project]:
        ids = list(project_ids)
        if not ids:
            return []
        raws = await self._r.mget([self._key(i) for i in ids])
        return [Project.from_record(json.loads(r)) for r in raws if r is not None]

    async def owned_ids(self, account_id: str) -> list[str]:
        """The owner's project ids, oldest first."""
        members = await self._r.zrange(self._owned_key(account_id), 0, -1)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def delete(self, project: Project) -> None:
        async with self._r.pipeline(transaction=True) as tx:
            tx.delete(self._key(project.id))
            tx.zrem(self._owned_key(project.owner_account_id), project.id)
            await tx.execute()
