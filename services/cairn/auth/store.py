"""Accounts, tokens, plan usage and login sessions in Redis.

Token secrets are stored only as SHA-256 digests. Keys (prefix `cairn:{auth}`: one hash tag, so
every transaction and script stays in one Redis Cluster slot):
`account:<id>` JSON, `account:<id>:tokens` set of token ids, `token:<id>` JSON (with the digest),
`secret:<digest>` token id, `identity:<provider>:<user id>` account id,
`usage:<account>` hash {components, storage}, `usage:<account>:upload:<YYYY-MM>` counter,
`login:<kind>:<key>` pending login sessions (with a TTL), `accounts` sorted set of account ids
scored by creation time, `usage:<account>:fuel:<YYYY-MM>` fuel consumed that month. Every change
to a token or an account is announced on `cairn:auth:changes` (see `token_cache`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, cast

import redis.asyncio as aioredis

from cairn.auth.settings import DEFAULT_PLAN_ID
from cairn.auth.token_cache import publish_change
from cairn.runtime.timefmt import parse_rfc3339, rfc3339, utc_now

# Golem's root token never expires in practice; 2100 is the date its docs use for "far future".
FAR_FUTURE = "2100-01-01T00:00:00Z"

# Check every limit first, then record all counters, so a refused call records nothing.
# KEYS: usage hash, this month's upload counter, and (optional) the operation's record.
# ARGV: count delta, storage delta, upload bytes, component limit, storage limit, monthly upload
# limit, upload counter TTL seconds, operation record TTL seconds, 'cancel' or ''.
# Returns {0, which-limit} when refused, else {1, components, storage, uploaded}.
# An operation is applied once: its record remembers the deltas ('applied') so that a cancel
# gives exactly them back, or that it was cancelled first ('cancelled'), after which it is inert.
_RECORD_USAGE = """
local components = tonumber(redis.call('HGET', KEYS[1], 'components') or '0')
local storage = tonumber(redis.call('HGET', KEYS[1], 'storage') or '0')
local uploaded = tonumber(redis.call('GET', KEYS[2]) or '0')
local dcount, dstorage, upload = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if KEYS[3] then
  local state = redis.call('HGET', KEYS[3], 'state')
  if ARGV[9] == 'cancel' then
    if state == 'applied' then
      components = math.max(0, components - tonumber(redis.call('HGET', KEYS[3], 'components')))
      storage = math.max(0, storage - tonumber(redis.call('HGET', KEYS[3], 'storage')))
      redis.call('HSET', KEYS[1], 'components', components, 'storage', storage)
    end
    redis.call('HSET', KEYS[3], 'state', 'cancelled')
    redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
    return {1, components, storage, uploaded}
  end
  if state then return {1, components, storage, uploaded} end
end
if dcount > 0 and components + dcount > tonumber(ARGV[4]) then return {0, 'components'} end
if dstorage > 0 and storage + dstorage > tonumber(ARGV[5]) then return {0, 'storage'} end
if upload > 0 and uploaded + upload > tonumber(ARGV[6]) then return {0, 'upload'} end
local new_components = math.max(0, components + dcount)
local new_storage = math.max(0, storage + dstorage)
redis.call('HSET', KEYS[1], 'components', new_components, 'storage', new_storage)
if upload > 0 then
  uploaded = redis.call('INCRBY', KEYS[2], upload)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
end
if KEYS[3] then
  redis.call('HSET', KEYS[3], 'state', 'applied', 'components', new_components - components,
             'storage', new_storage - storage)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
end
return {1, new_components, new_storage, uploaded}
"""
# How long an operation's record is kept: far longer than any upload or crash recovery.
USAGE_OPERATION_TTL_SECONDS = 7 * 24 * 3600


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def secret_digest(secret: str) -> str:
    # Secrets are random v4 UUIDs (122 bits): a fast unsalted hash suffices, nothing to brute-force.
    return hashlib.sha256(secret.lower().encode()).hexdigest()


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    email: str
    plan_id: str = DEFAULT_PLAN_ID
    roles: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Golem's Account JSON."""
        return {"id": self.id, "name": self.name, "email": self.email, "planId": self.plan_id}


@dataclass(frozen=True)
class Token:
    id: str
    account_id: str
    created_at: str
    expires_at: str

    def expired(self, now: datetime | None = None) -> bool:
        return parse_rfc3339(self.expires_at) <= (now or utc_now())

    def to_json(self) -> dict[str, Any]:
        """Golem's Token JSON."""
        return {
            "id": self.id,
            "accountId": self.account_id,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
        }


@dataclass(frozen=True)
class Usage:
    component_count: int
    storage_bytes: int
    monthly_upload_bytes: int


@dataclass(frozen=True)
class UsageRefused:
    """Which limit a usage record would have exceeded: components, storage or upload."""

    limit: str


def _account_from(raw: bytes | str) -> Account:
    data = json.loads(raw)
    return Account(data["id"], data["name"], data["email"], data["plan_id"], tuple(data["roles"]))


def _token_from(raw: bytes | str) -> Token:
    data = json.loads(raw)
    return Token(data["id"], data["account_id"], data["created_at"], data["expires_at"])


PREFIX = "cairn:{auth}"
LEGACY_PREFIX = "cairn:auth:"  # before the hash tag; renamed once by adopt_legacy_keys


class AuthStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX) -> None:
        self._r = redis
        self._p = prefix
        self._record_usage = redis.register_script(_RECORD_USAGE)

    def _account_key(self, account_id: str) -> str:
        return f"{self._p}:account:{account_id}"

    def _tokens_key(self, account_id: str) -> str:
        return f"{self._account_key(account_id)}:tokens"

    def _token_key(self, token_id: str) -> str:
        return f"{self._p}:token:{token_id}"

    def _digest_key(self, digest: str) -> str:
        return f"{self._p}:secret:{digest}"

    def _secret_key(self, secret: str) -> str:
        return self._digest_key(secret_digest(secret))

    # --- accounts -------------------------------------------------------------------------

    @property
    def _index_key(self) -> str:
        return f"{self._p}:accounts"

    async def put_account(self, account: Account) -> None:
        record = asdict(account) | {"roles": list(account.roles)}
        async with self._r.pipeline(transaction=True) as tx:
            tx.set(self._account_key(account.id), json.dumps(record))
            # NX: the first write is the account's creation time.
            tx.zadd(self._index_key, {account.id: time.time()}, nx=True)
            await tx.execute()
        await publish_change(self._r)

    async def index_accounts(self) -> int:
        """Adds accounts stored before the index existed (now as their creation time)."""
        added = 0
        pattern = f"{self._account_key('*')}"
        async for key in self._r.scan_iter(match=pattern, count=500):
            account_id = _text(key).removeprefix(self._account_key(""))
            if account_id.endswith(":tokens"):
                continue
            added += int(
                await self._r.zadd(self._index_key, {account_id: time.time()}, nx=True) or 0
            )
        return added

    async def account_count(self) -> int:
        return int(await self._r.zcard(self._index_key))

    async def newest_accounts(self, skip: int, limit: int) -> list[tuple[Account, float, int]]:
        """(account, created at epoch seconds, component count), newest first."""
        if limit <= 0:
            return []
        scored = await self._r.zrevrange(
            self._index_key, skip, skip + limit - 1, withscores=True
        )
        ids = [(_text(member), float(score)) for member, score in cast(list[Any], scored)]
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as tx:
            for account_id, _ in ids:
                tx.get(self._account_key(account_id))
                tx.hget(f"{self._p}:usage:{account_id}", "components")
            replies = await tx.execute()
        found = []
        for (_, created), raw, components in zip(ids, replies[::2], replies[1::2], strict=True):
            if raw is not None:
                found.append((_account_from(raw), float(created), int(components or 0)))
        return found

    async def account(self, account_id: str) -> Account | None:
        raw = await self._r.get(self._account_key(account_id))
        return None if raw is None else _account_from(raw)

    async def modify_account(
        self, account_id: str, change: Callable[[Account], Account]
    ) -> Account | None:
        """Apply `change` to the stored account atomically (retried if another write raced it).

        None if there is no such account. `change` may raise to abort without writing.
        """
        key = self._account_key(account_id)
        async with self._r.pipeline(transaction=True) as tx:
            while True:
                try:
                    await tx.watch(key)
                    raw = await tx.get(key)
                    if raw is None:
                        return None  # leaving the pipeline block drops the watch
                    changed = change(_account_from(raw))
                    tx.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    tx.set(key, json.dumps(asdict(changed) | {"roles": list(changed.roles)}))
                    await tx.execute()
                    await publish_change(self._r)
                    return changed
                except aioredis.WatchError:
                    continue

    async def delete_account(self, account_id: str) -> None:
        """Removes the account and revokes every token it has."""
        for token_id in await self.token_ids(account_id):
            await self.delete_token(token_id)
        async with self._r.pipeline(transaction=True) as tx:
            tx.delete(self._account_key(account_id), self._tokens_key(account_id))
            tx.delete(f"{self._p}:usage:{account_id}")
            tx.zrem(self._index_key, account_id)
            await tx.execute()
        await publish_change(self._r)

    async def account_for_identity(self, identity: str, candidate: Account) -> Account:
        """The account linked to an external identity, linking `candidate` if there is none.

        The candidate is stored before the link is claimed, so whoever reads the link finds the
        account; concurrent first logins all end up in the one account whose link won.
        """
        key = f"{self._p}:identity:{identity}"
        await self.put_account(candidate)
        if await self._r.set(key, candidate.id, nx=True):
            return candidate
        async with self._r.pipeline(transaction=True) as tx:
            tx.delete(self._account_key(candidate.id))
            tx.zrem(self._index_key, candidate.id)
            await tx.execute()
        existing = await self.account(_text(await self._r.get(key) or b""))
        if existing is not None:
            return existing
        # The linked account was deleted: a new login starts over with a new account.
        await self.put_account(candidate)
        await self._r.set(key, candidate.id)
        return candidate

    async def root_token_id(self) -> str | None:
        raw = await self._r.get(f"{self._p}:root-token-id")
        return None if raw is None else _text(raw)

    # --- tokens ---------------------------------------------------------------------------

    async def token_by_secret(self, secret: str) -> Token | None:
        return await self.token_by_digest(secret_digest(secret))

    async def token_by_digest(self, digest: str) -> Token | None:
        token_id = await self._r.get(self._digest_key(digest))
        if token_id is None:
            return None
        return await self.token(_text(token_id))

    async def token(self, token_id: str) -> Token | None:
        raw = await self._r.get(self._token_key(token_id))
        return None if raw is None else _token_from(raw)

    async def token_ids(self, account_id: str) -> list[str]:
        return sorted(_text(m) for m in await self._r.smembers(self._tokens_key(account_id)))

    async def tokens(self, account_id: str) -> list[Token]:
        """The account's tokens, oldest first."""
        ids = await self.token_ids(account_id)
        if not ids:
            return []
        raws = await self._r.mget([self._token_key(i) for i in ids])
        found = [_token_from(r) for r in raws if r is not None]
        return sorted(found, key=lambda t: (t.created_at, t.id))

    async def add_token(self, account_id: str, secret: str, expires_at: str) -> Token:
        token = Token(str(uuid.uuid4()), account_id, rfc3339(utc_now()), expires_at)
        digest = secret_digest(secret)
        async with self._r.pipeline(transaction=True) as tx:
            tx.set(self._token_key(token.id), json.dumps(asdict(token) | {"digest": digest}))
            tx.set(self._digest_key(digest), token.id)
            tx.sadd(self._tokens_key(account_id), token.id)
            await tx.execute()
        return token

    async def delete_token(self, token_id: str) -> None:
        raw = await self._r.get(self._token_key(token_id))
        if raw is None:
            return
        data = json.loads(raw)
        async with self._r.pipeline(transaction=True) as tx:
            tx.delete(self._token_key(token_id))
            if "digest" in data:
                tx.delete(self._digest_key(data["digest"]))
            tx.srem(self._tokens_key(data["account_id"]), token_id)
            await tx.execute()
        await publish_change(self._r)

    async def bootstrap_root(self, account_id: str, email: str, secret: str) -> None:
        """Make the configured root token the root account's only bootstrap token (idempotent)."""
        existing_account = await self.account(account_id)
        roles: tuple[str, ...] = ("Admin",)
        if existing_account is not None and "Admin" in existing_account.roles:
            roles = existing_account.roles
        await self.put_account(Account(account_id, "Root", email, roles=roles))
        existing = await self.token_by_secret(secret)
        if existing is not None and existing.account_id == account_id:
            return
        marker = f"{self._p}:root-token-id"
        previous = await self._r.get(marker)
        token = await self.add_token(account_id, secret, FAR_FUTURE)
        await self._r.set(marker, token.id)
        if previous is not None:
            # A changed CAIRN_ROOT_TOKEN revokes the old one.
            await self.delete_token(_text(previous))

    # --- plan usage -----------------------------------------------------------------------

    async def record_usage(
        self,
        account_id: str,
        *,
        count_delta: int,
        storage_delta: int,
        upload_bytes: int,
        limits: tuple[int, int, int],
        operation_id: str = "",
        cancel: bool = False,
    ) -> Usage | UsageRefused:
        """Atomically check (component, storage, monthly upload) limits and record the usage;
        with `operation_id`, once per id, and `cancel` gives that operation's usage back."""
        month = utc_now().strftime("%Y-%m")
        keys = [f"{self._p}:usage:{account_id}", f"{self._p}:usage:{account_id}:upload:{month}"]
        if operation_id:
            keys.append(f"{self._p}:usage:{account_id}:operation:{operation_id}")
        reply = await self._record_usage(
            keys=keys,
            # 40 days: the counter outlives its month, then Redis drops it.
            args=[count_delta, storage_delta, upload_bytes, *limits, 40 * 24 * 3600,
                  USAGE_OPERATION_TTL_SECONDS, "cancel" if cancel else ""],
        )
        if int(reply[0]) == 0:
            return UsageRefused(_text(reply[1]))
        return Usage(int(reply[1]), int(reply[2]), int(reply[3]))

    def _fuel_key(self, account_id: str) -> str:
        return f"{self._p}:usage:{account_id}:fuel:{utc_now().strftime('%Y-%m')}"

    async def fuel_consumed(self, account_id: str) -> int:
        """Fuel the account consumed this calendar month (UTC)."""
        return int(await self._r.get(self._fuel_key(account_id)) or 0)

    async def record_fuel(self, updates: dict[str, int]) -> bool:
        """Adds each account's consumed fuel to this month's counter, all or nothing.

        False (nothing recorded) if a counter would leave the signed 64-bit range.
        """
        keys = {account_id: self._fuel_key(account_id) for account_id in updates}
        if not keys:
            return True
        async with self._r.pipeline(transaction=True) as tx:
            while True:
                try:
                    await tx.watch(*keys.values())
                    totals = {
                        key: int(await tx.get(key) or 0) + updates[account_id]
                        for account_id, key in keys.items()
                    }
                    if any(not -(2**63) <= total < 2**63 for total in totals.values()):
                        return False
                    tx.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    for key, total in totals.items():
                        # The counter outlives its month, then Redis drops it.
                        tx.set(key, total, ex=40 * 24 * 3600)
                    await tx.execute()
                    return True
                except aioredis.WatchError:
                    continue

    # --- login sessions -------------------------------------------------------------------

    async def put_login(self, kind: str, key: str, record: dict[str, Any], ttl: int) -> None:
        await self._r.set(f"{self._p}:login:{kind}:{key}", json.dumps(record), ex=max(1, ttl))

    async def login(self, kind: str, key: str) -> dict[str, Any] | None:
        raw = await self._r.get(f"{self._p}:login:{kind}:{key}")
        return None if raw is None else dict(json.loads(raw))

    async def take_login(self, kind: str, key: str) -> dict[str, Any] | None:
        """Read and delete a login session at once, so it is redeemed only once."""
        raw = await self._r.getdel(f"{self._p}:login:{kind}:{key}")
        return None if raw is None else dict(json.loads(raw))
