"""Accounts and tokens in Redis. Token secrets are stored only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime

import redis.asyncio as aioredis

from cairn.runtime.timefmt import parse_rfc3339, rfc3339, utc_now

DEFAULT_PLAN_ID = "00000000-0000-0000-0000-000000000000"
# Golem's root token never expires in practice; 2100 is the date its docs use for "far future".
FAR_FUTURE = "2100-01-01T00:00:00Z"


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


@dataclass(frozen=True)
class Token:
    id: str
    account_id: str
    created_at: str
    expires_at: str

    def expired(self, now: datetime | None = None) -> bool:
        return parse_rfc3339(self.expires_at) <= (now or utc_now())


class AuthStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "cairn:auth") -> None:
        self._r = redis
        self._p = prefix

    def _account_key(self, account_id: str) -> str:
        return f"{self._p}:account:{account_id}"

    def _token_key(self, token_id: str) -> str:
        return f"{self._p}:token:{token_id}"

    def _secret_key(self, secret: str) -> str:
        return f"{self._p}:secret:{secret_digest(secret)}"

    async def put_account(self, account: Account) -> None:
        record = asdict(account) | {"roles": list(account.roles)}
        await self._r.set(self._account_key(account.id), json.dumps(record))

    async def account(self, account_id: str) -> Account | None:
        raw = await self._r.get(self._account_key(account_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return Account(
            data["id"], data["name"], data["email"], data["plan_id"], tuple(data["roles"])
        )

    async def token_by_secret(self, secret: str) -> Token | None:
        token_id = await self._r.get(self._secret_key(secret))
        if token_id is None:
            return None
        raw = await self._r.get(self._token_key(_text(token_id)))
        return None if raw is None else Token(**json.loads(raw))

    async def add_token(self, account_id: str, secret: str, expires_at: str) -> Token:
        token = Token(str(uuid.uuid4()), account_id, rfc3339(utc_now()), expires_at)
        async with self._r.pipeline(transaction=True) as tx:
            tx.set(self._token_key(token.id), json.dumps(asdict(token)))
            tx.set(self._secret_key(secret), token.id)
            tx.sadd(f"{self._account_key(account_id)}:tokens", token.id)
            await tx.execute()
        return token

    async def bootstrap_root(self, account_id: str, email: str, secret: str) -> None:
        """Make the configured root token the root account's only bootstrap token (idempotent)."""
        await self.put_account(Account(account_id, "Root", email, roles=("Admin",)))
        existing = await self.token_by_secret(secret)
        if existing is not None and existing.account_id == account_id:
            return
        marker = f"{self._p}:root-token-id"
        previous = await self._r.get(marker)
        token = await self.add_token(account_id, secret, FAR_FUTURE)
        async with self._r.pipeline(transaction=True) as tx:
            tx.set(marker, token.id)
            if previous is not None:
                # A changed CAIRN_ROOT_TOKEN revokes the old one.
                tx.delete(self._token_key(_text(previous)))
                tx.srem(f"{self._account_key(account_id)}:tokens", previous)
            await tx.execute()
