"""Projects, policies and grants in Redis.

Keys (prefix `cairn:{project}`, one hash tag: one Redis Cluster slot): `<project id>` JSON,
`owned-by:<account>` creation-ordered ids, `default-of:<account>` default project id,
`policy:<id>` JSON, `grant:<id>` JSON, `grants-of:<project>` grant ids by creation,
`grants-to:<account>` grant ids by creation,
`plugins-of:<account>` hash `["name","version"]` -> plugin definition JSON (with its `seq`),
`plugin-seq` registration counter, `plugin-installs:<project>` hash id -> installation JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import redis.asyncio as aioredis

from cairn.component.model import PluginInstallation
from cairn.project.model import Project, ProjectGrant, ProjectPolicy
from cairn.project.plugin_model import PluginDefinition

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

# Create a project only while the owner has fewer than the limit, checked and done atomically so
# concurrent creates cannot overshoot. Returns 1 if created, 0 if the limit was reached.
_CREATE_WITHIN_LIMIT = """
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


PREFIX = "cairn:{project}"
LEGACY_PREFIX = "cairn:project:"  # before the hash tag; renamed once by adopt_legacy_keys


class ProjectStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        self._r = redis
        self._p = prefix
        self._ensure_default = redis.register_script(_ENSURE_DEFAULT)
        self._create_within_limit = redis.register_script(_CREATE_WITHIN_LIMIT)

    def _key(self, project_id: str) -> str:
        return f"{self._p}:{project_id}"

    def _owned_key(self, account_id: str) -> str:
        return f"{self._p}:owned-by:{account_id}"

    def _default_key(self, account_id: str) -> str:
        return f"{self._p}:default-of:{account_id}"

    def _policy_key(self, policy_id: str) -> str:
        return f"{self._p}:policy:{policy_id}"

    def _grant_key(self, grant_id: str) -> str:
        return f"{self._p}:grant:{grant_id}"

    def _grants_of_key(self, project_id: str) -> str:
        return f"{self._p}:grants-of:{project_id}"

    def _grants_to_key(self, account_id: str) -> str:
        return f"{self._p}:grants-to:{account_id}"

    def _plugins_key(self, account_id: str) -> str:
        return f"{self._p}:plugins-of:{account_id}"

    def _installs_key(self, project_id: str) -> str:
        return f"{self._p}:plugin-installs:{project_id}"

    # --- projects -------------------------------------------------------------------------

    async def ensure_default(self, candidate: Project) -> str:
        """The id of the owner's default project; `candidate` is stored if none exists."""
        owner = candidate.owner_account_id
        result = await self._ensure_default(
            keys=[self._default_key(owner), self._key(candidate.id), self._owned_key(owner)],
            args=[candidate.id, json.dumps(candidate.to_record()), time.time()],
        )
        return _text(result)

    async def create(self, project: Project, limit: int | None = None) -> bool:
        """Stores the project; False (nothing stored) if the owner already has `limit` projects."""
        if limit is None:
            async with self._r.pipeline(transaction=True) as tx:
                tx.set(self._key(project.id), json.dumps(project.to_record()))
                tx.zadd(self._owned_key(project.owner_account_id), {project.id: time.time()})
                await tx.execute()
            return True
        created = await self._create_within_limit(
            keys=[self._key(project.id), self._owned_key(project.owner_account_id)],
            args=[json.dumps(project.to_record()), time.time(), limit, project.id],
        )
        return int(created) == 1

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
        return [_text(m) for m in await self._r.zrange(self._owned_key(account_id), 0, -1)]

    async def delete(self, project: Project) -> None:
        """Removes the project and every grant on it."""
        grants = await self.grants_of(project.id)
        async with self._r.pipeline(transaction=True) as tx:
            tx.delete(
                self._key(project.id),
                self._grants_of_key(project.id),
                self._installs_key(project.id),
            )
            tx.zrem(self._owned_key(project.owner_account_id), project.id)
            for grant in grants:
                tx.delete(self._grant_key(grant.id))
                tx.zrem(self._grants_to_key(grant.grantee_account_id), grant.id)
            await tx.execute()

    # --- policies -------------------------------------------------------------------------

    async def put_policy(self, policy: ProjectPolicy) -> None:
        await self._r.set(self._policy_key(policy.id), json.dumps(policy.to_record()))

    async def policy(self, policy_id: str) -> ProjectPolicy | None:
        raw = await self._r.get(self._policy_key(policy_id))
        return None if raw is None else ProjectPolicy.from_record(json.loads(raw))

    async def policies(self, policy_ids: Iterable[str]) -> dict[str, ProjectPolicy]:
        ids = sorted(set(policy_ids))
        if not ids:
            return {}
        raws = await self._r.mget([self._policy_key(i) for i in ids])
        found = [ProjectPolicy.from_record(json.loads(r)) for r in raws if r is not None]
        return {p.id: p for p in found}

    # --- grants ---------------------------------------------------------------------------

    async def add_grant(self, grant: ProjectGrant) -> None:
        now = time.time()
        async with self._r.pipeline(transaction=True) as tx:
            tx.set(self._grant_key(grant.id), json.dumps(grant.to_record()))
            tx.zadd(self._grants_of_key(grant.project_id), {grant.id: now})
            tx.zadd(self._grants_to_key(grant.grantee_account_id), {grant.id: now})
            await tx.execute()

    async def grant(self, grant_id: str) -> ProjectGrant | None:
        raw = await self._r.get(self._grant_key(grant_id))
        return None if raw is None else ProjectGrant.from_record(json.loads(raw))

    async def _grants(self, key: str) -> list[ProjectGrant]:
        ids = [_text(m) for m in await self._r.zrange(key, 0, -1)]
        if not ids:
            return []
        raws = await self._r.mget([self._grant_key(i) for i in ids])
        return [ProjectGrant.from_record(json.loads(r)) for r in raws if r is not None]

    async def grants_of(self, project_id: str) -> list[ProjectGrant]:
        """Grants on a project, oldest first."""
        return await self._grants(self._grants_of_key(project_id))

    async def grants_to(self, account_id: str) -> list[ProjectGrant]:
        """Grants an account holds, oldest first."""
        return await self._grants(self._grants_to_key(account_id))

    async def delete_grant(self, grant: ProjectGrant) -> None:
        async with self._r.pipeline(transaction=True) as tx:
            tx.delete(self._grant_key(grant.id))
            tx.zrem(self._grants_of_key(grant.project_id), grant.id)
            tx.zrem(self._grants_to_key(grant.grantee_account_id), grant.id)
            await tx.execute()

    # --- plugins --------------------------------------------------------------------------

    async def add_plugin(self, plugin: PluginDefinition) -> bool:
        """Registers the plugin; False (nothing stored) if its owner already has that version."""
        key = self._plugins_key(plugin.owner_account_id)
        field = json.dumps([plugin.name, plugin.version])
        if await self._r.hexists(key, field):
            return False
        seq = await self._r.incr(f"{self._p}:plugin-seq")
        return bool(await self._r.hsetnx(key, field, json.dumps(plugin.to_json() | {"seq": seq})))

    async def plugin(self, owner: str, name: str, version: str) -> PluginDefinition | None:
        raw = await self._r.hget(self._plugins_key(owner), json.dumps([name, version]))
        return None if raw is None else PluginDefinition.from_record(json.loads(raw))

    async def plugins_of(self, owner: str) -> list[PluginDefinition]:
        """The owner's plugins, in registration order."""
        raws = (await self._r.hgetall(self._plugins_key(owner))).values()
        records = sorted((json.loads(r) for r in raws), key=lambda r: r["seq"])
        return [PluginDefinition.from_record(r) for r in records]

    async def delete_plugin(self, owner: str, name: str, version: str) -> bool:
        return bool(await self._r.hdel(self._plugins_key(owner), json.dumps([name, version])))

    async def put_project_installation(
        self, project_id: str, installation: PluginInstallation
    ) -> None:
        key = self._installs_key(project_id)
        existing = await self._r.hget(key, installation.id)
        if existing:
            seq = json.loads(existing)["seq"]
        else:
            seq = await self._r.incr(f"{self._p}:plugin-seq")
        await self._r.hset(key, installation.id, json.dumps(installation.to_json() | {"seq": seq}))

    async def project_installation(
        self, project_id: str, installation_id: str
    ) -> PluginInstallation | None:
        raw = await self._r.hget(self._installs_key(project_id), installation_id)
        return None if raw is None else PluginInstallation.from_json(json.loads(raw))

    async def project_installations(self, project_id: str) -> list[PluginInstallation]:
        """The project's plugin installations, oldest first."""
        raws = (await self._r.hgetall(self._installs_key(project_id))).values()
        records = sorted((json.loads(r) for r in raws), key=lambda r: r["seq"])
        return [PluginInstallation.from_json(r) for r in records]

    async def delete_project_installation(self, project_id: str, installation_id: str) -> None:
        await self._r.hdel(self._installs_key(project_id), installation_id)
