"""Auth use cases: authentication, accounts and their roles, tokens, and plan usage.

Access rule for account-scoped operations (Golem's): the account itself or an `Admin`.
Denials are 401 with Golem's wording, e.g. "Access to account `<id>` is not allowed".
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cairn.auth.settings import Plan
from cairn.auth.store import (
    FAR_FUTURE,
    Account,
    AuthStore,
    Token,
    Usage,
    UsageRefused,
    secret_digest,
)
from cairn.auth.token_cache import TokenCache
from cairn.runtime.errors import (
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    Problems,
    Unauthenticated,
    quote,
)
from cairn.runtime.principal import Principal
from cairn.runtime.timefmt import parse_rfc3339, rfc3339

UNKNOWN_TOKEN = "Invalid Token: Unknown token secret."
EXPIRED_TOKEN = "Invalid Token: Expired auth token."
MISSING_TOKEN = "Unauthorized"
MALFORMED_TOKEN = "Invalid Token: Token secret must be a UUID."
ADMIN_ONLY = "Action is only allowed for [Admin]"
SUMMARY_READERS_ONLY = "Action is only allowed for [Admin, MarketingAdmin]"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ACCOUNT_NOT_FOUND = "Account not found"

# Golem's Role enum (Dec 2024).
ROLES = (
    "Admin", "MarketingAdmin", "ViewProject", "DeleteProject", "CreateProject",
    "InstanceServer", "UpdateProject", "ViewPlugin", "CreatePlugin", "DeletePlugin",
)


class Authenticator:
    def __init__(self, store: AuthStore, cache: TokenCache | None = None) -> None:
        """`cache` None: every call reads the token and its account from Redis."""
        self._store = store
        self._cache = cache or TokenCache(ttl_seconds=0)

    async def authenticate(self, secret: str) -> Principal:
        if not secret:
            raise Unauthenticated(MISSING_TOKEN)
        try:
            uuid.UUID(secret)
        except ValueError:
            raise Unauthenticated(MALFORMED_TOKEN) from None
        digest = secret_digest(secret)
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        generation = self._cache.generation
        token = await self._store.token_by_digest(digest)
        if token is None:
            raise Unauthenticated(UNKNOWN_TOKEN)
        if token.expired():
            raise Unauthenticated(EXPIRED_TOKEN)
        account = await self._store.account(token.account_id)
        if account is None:
            # The account was deleted after the token was issued.
            raise Unauthenticated(UNKNOWN_TOKEN)
        principal = Principal(account.id, token.id, account.roles)
        expires = parse_rfc3339(token.expires_at).timestamp()
        self._cache.put(digest, principal, expires, generation)
        return principal


def require_account_access(caller: Principal, account_id: str) -> None:
    if caller.account_id != account_id and not caller.is_admin:
        raise PermissionDenied(f"Access to account `{account_id}` is not allowed")


def require_admin(caller: Principal) -> None:
    if not caller.is_admin:
        raise PermissionDenied(ADMIN_ONLY)


def _required(fields: Sequence[tuple[str, str | None]]) -> None:
    problems = Problems()
    for name, value in fields:
        if value is None:
            problems.add(name, f"Missing field: {name}")
    problems.raise_if_any()


def _required_query(fields: Sequence[tuple[str, object | None]]) -> None:
    problems = Problems()
    for name, value in fields:
        if value is None:
            problems.add(name, f"Missing query parameter: {name}")
    problems.raise_if_any()


def _validate_account_data(name: str, email: str) -> None:
    problems = Problems()
    if not name.strip():
        problems.add("name", "Account name must not be empty")
    local, at, domain = email.partition("@")
    if not (local and at and domain) or any(c.isspace() for c in email):
        problems.add("email", f"Invalid email: {quote(email)!r}")
    problems.raise_if_any()


def parse_role(raw: str) -> str:
    if raw not in ROLES:
        raise InvalidRequest.for_field(
            "role", f"Invalid role: {quote(raw)!r}; expected one of {', '.join(ROLES)}")
    return raw


class AccountService:
    def __init__(self, store: AuthStore, plan: Plan, root_account_id: str) -> None:
        self._store = store
        self._plan = plan
        self._root = root_account_id

    @property
    def plan(self) -> Plan:
        return self._plan

    async def _existing(self, account_id: str) -> Account:
        account = await self._store.account(account_id)
        if account is None:
            raise NotFound(ACCOUNT_NOT_FOUND)
        return account

    async def create(self, caller: Principal, name: str | None, email: str | None) -> Account:
        require_admin(caller)
        _required((("name", name), ("email", email)))
        assert name is not None and email is not None
        _validate_account_data(name, email)
        account = Account(str(uuid.uuid4()), name, email, self._plan.plan_id)
        await self._store.put_account(account)
        return account

    async def get(self, caller: Principal, account_id: str) -> Account:
        require_account_access(caller, account_id)
        return await self._existing(account_id)

    async def lookup(self, account_id: str) -> Account:
        """For other services: the account, whoever asks."""
        return await self._existing(account_id)

    async def update(
        self,
        caller: Principal,
        account_id: str,
        name: str | None,
        email: str | None,
        *,
        body_id: str | None = None,
        plan_id: str | None = None,
    ) -> Account:
        require_account_access(caller, account_id)
        _required((("name", name), ("email", email)))
        assert name is not None and email is not None
        if body_id is not None and body_id != account_id:
            raise InvalidRequest.for_field(
                "id", "The account id in the body does not match the path")
        _validate_account_data(name, email)

        def rename(current: Account) -> Account:
            if plan_id is not None and plan_id != current.plan_id:
                raise InvalidRequest.for_field(
                    "planId", "Changing the plan of an account is not allowed")
            return replace(current, name=name, email=email)

        updated = await self._store.modify_account(account_id, rename)
        if updated is None:
            raise NotFound(ACCOUNT_NOT_FOUND)
        return updated

    async def delete(self, caller: Principal, account_id: str) -> None:
        require_account_access(caller, account_id)
        await self._existing(account_id)
        if account_id == self._root:
            raise InvalidRequest("Cannot delete the root account")
        await self._store.delete_account(account_id)

    async def plan_of(self, caller: Principal, account_id: str) -> Plan:
        require_account_access(caller, account_id)
        await self._existing(account_id)
        return self._plan

    async def roles(self, caller: Principal, account_id: str) -> tuple[str, ...]:
        require_account_access(caller, account_id)
        return (await self._existing(account_id)).roles

    async def role(self, caller: Principal, account_id: str, raw_role: str) -> str:
        require_account_access(caller, account_id)
        role = parse_role(raw_role)
        if role not in (await self._existing(account_id)).roles:
            raise NotFound(f"Role not found: {role}")
        return role

    async def grant_role(self, caller: Principal, account_id: str, raw_role: str) -> str:
        require_admin(caller)
        role = parse_role(raw_role)

        def add(account: Account) -> Account:
            return account if role in account.roles else replace(
                account, roles=(*account.roles, role)
            )

        if await self._store.modify_account(account_id, add) is None:
            raise NotFound(ACCOUNT_NOT_FOUND)
        return role

    async def revoke_role(self, caller: Principal, account_id: str, raw_role: str) -> None:
        require_admin(caller)
        role = parse_role(raw_role)
        if role == "Admin" and account_id == self._root:
            raise InvalidRequest("Cannot remove the Admin role from the root account")

        def remove(account: Account) -> Account:
            return replace(account, roles=tuple(r for r in account.roles if r != role))

        if await self._store.modify_account(account_id, remove) is None:
            raise NotFound(ACCOUNT_NOT_FOUND)


@dataclass(frozen=True)
class IssuedToken:
    """A token and its secret: the secret exists only in this value, never in storage."""

    token: Token
    secret: str

    def to_json(self) -> dict[str, object]:
        """Golem's UnsafeToken JSON."""
        return {"data": self.token.to_json(), "secret": {"value": self.secret}}


class TokenService:
    def __init__(self, store: AuthStore) -> None:
        self._store = store

    async def _require_account(self, caller: Principal, account_id: str) -> None:
        require_account_access(caller, account_id)
        if await self._store.account(account_id) is None:
            # Golem answers an unknown account on the token API with 400.
            raise InvalidRequest(f"Account Not Found: {account_id}")

    async def list(self, caller: Principal, account_id: str) -> list[Token]:
        await self._require_account(caller, account_id)
        return await self._store.tokens(account_id)

    async def create(
        self, caller: Principal, account_id: str, expires_at: str | None
    ) -> IssuedToken:
        await self._require_account(caller, account_id)
        expiry = FAR_FUTURE
        if expires_at is not None:
            try:
                expiry = rfc3339(parse_rfc3339(expires_at))
            except ValueError:
                raise InvalidRequest(
                    f"Invalid expiresAt: {expires_at!r} is not an RFC 3339 date-time"
                ) from None
        return await self.issue(account_id, expiry)

    async def issue(self, account_id: str, expires_at: str) -> IssuedToken:
        secret = str(uuid.uuid4())
        return IssuedToken(await self._store.add_token(account_id, secret, expires_at), secret)

    async def get(self, caller: Principal, account_id: str, token_id: str) -> Token:
        await self._require_account(caller, account_id)
        token = await self._store.token(token_id)
        if token is None or token.account_id != account_id:
            raise NotFound(f"Unknown token: {token_id}")
        return token

    async def delete(self, caller: Principal, account_id: str, token_id: str) -> None:
        token = await self.get(caller, account_id, token_id)
        await self._store.delete_token(token.id)

    async def current(self, caller: Principal) -> Token:
        """The token the caller authenticated with."""
        token = await self._store.token(caller.token_id) if caller.token_id else None
        if token is None or token.account_id != caller.account_id:
            raise Unauthenticated(UNKNOWN_TOKEN)
        return token


@dataclass(frozen=True)
class AccountSummary:
    """Golem's AccountSummary: an account as the admin listing shows it."""

    account: Account
    created_at: str
    component_count: int

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.account.id,
            "name": self.account.name,
            "email": self.account.email,
            "componentCount": self.component_count,
            "workerCount": 0,
            "createdAt": self.created_at,
        }


def require_summary_reader(caller: Principal) -> None:
    # Golem: Admin or MarketingAdmin.
    if not ({"Admin", "MarketingAdmin"} & set(caller.roles)):
        raise PermissionDenied(SUMMARY_READERS_ONLY)


class AccountSummaryService:
    """Golem's admin account listing: newest accounts first, a page at a time."""

    def __init__(self, store: AuthStore) -> None:
        self._store = store

    async def page(
        self, caller: Principal, skip: int | None, limit: int | None
    ) -> list[AccountSummary]:
        require_summary_reader(caller)
        _required_query((("skip", skip), ("limit", limit)))
        assert skip is not None and limit is not None
        found = await self._store.newest_accounts(max(0, skip), max(0, limit))
        return [
            AccountSummary(account, rfc3339(datetime.fromtimestamp(created, UTC)), components)
            for account, created, components in found
        ]

    async def count(self, caller: Principal) -> int:
        require_summary_reader(caller)
        return await self._store.account_count()


@dataclass(frozen=True)
class ResourceLimits:
    available_fuel: int
    max_memory_per_worker: int

    def to_json(self) -> dict[str, object]:
        return {
            "availableFuel": self.available_fuel,
            "maxMemoryPerWorker": self.max_memory_per_worker,
        }


class ResourceLimitsService:
    """Golem's worker resource limits: monthly fuel (the plan's gas) and memory per worker."""

    def __init__(self, store: AuthStore, plan: Plan) -> None:
        self._store = store
        self._plan = plan

    async def _account(self, caller: Principal, account_id: str) -> None:
        require_account_access(caller, account_id)
        if await self._store.account(account_id) is None:
            # Golem answers an unknown account on the limits API with 400.
            raise InvalidRequest(f"Account Not Found: {account_id}")

    async def limits(self, caller: Principal, account_id: str | None) -> ResourceLimits:
        _required_query((("account-id", account_id),))
        assert account_id is not None
        await self._account(caller, account_id)
        available = self._plan.monthly_gas_limit - await self._store.fuel_consumed(account_id)
        return ResourceLimits(
            min(max(available, INT64_MIN), INT64_MAX), self._plan.max_memory_per_worker
        )

    async def record_fuel(self, caller: Principal, updates: dict[str, int]) -> None:
        """Checks every account first, then records all the updates or none."""
        for account_id, delta in updates.items():
            if not INT64_MIN <= delta <= INT64_MAX:
                raise InvalidRequest.for_field(
                    f"updates.{account_id}",
                    f"Invalid fuel update for {account_id}: not a 64-bit integer")
            await self._account(caller, account_id)
        if not await self._store.record_fuel(updates):
            raise InvalidRequest("Fuel update out of range: a counter would overflow 64 bits")


def _megabytes(limit: int) -> int:
    return limit // 1_000_000


class UsageService:
    """Plan limits on component count, stored bytes and monthly upload bytes, per account.

    The messages are what Golem's component service answers (403), wrapped as it wraps them.
    """

    def __init__(self, store: AuthStore, plan: Plan) -> None:
        self._store = store
        self._plan = plan

    async def record(
        self, account_id: str, count_delta: int, storage_delta: int, upload_bytes: int,
        *, operation_id: str = "", cancel: bool = False,
    ) -> Usage:
        if upload_bytes < 0:
            raise InvalidRequest("upload_bytes must not be negative")
        if cancel and not operation_id:
            raise InvalidRequest("cancel needs the operation_id to cancel")
        if await self._store.account(account_id) is None:
            raise NotFound(ACCOUNT_NOT_FOUND)
        plan = self._plan
        # The per-upload size cap is the component service's (CAIRN_COMPONENT_MAX_BYTES): it has
        # to stop a stream while it arrives, long before usage is recorded.
        outcome = await self._store.record_usage(
            account_id,
            count_delta=count_delta,
            storage_delta=storage_delta,
            upload_bytes=upload_bytes,
            limits=(plan.component_limit, plan.storage_limit, plan.monthly_upload_limit),
            operation_id=operation_id,
            cancel=cancel,
        )
        if isinstance(outcome, UsageRefused):
            reason = self._refusal(outcome, account_id)
            raise LimitExceeded(f"Limit exceeded: Limit Exceeded: {reason}")
        return outcome

    def _refusal(self, refused: UsageRefused, account_id: str) -> str:
        plan = self._plan
        if refused.limit == "components":
            return f"Component limit exceeded (limit: {plan.component_limit})"
        if refused.limit == "storage":
            return (
                f"Storage limit exceeded for account: {account_id} "
                f"(limit: {_megabytes(plan.storage_limit)} MB)"
            )
        return (
            f"Upload limit exceeded for account: {account_id} "
            f"(limit: {_megabytes(plan.monthly_upload_limit)} MB)"
        )
