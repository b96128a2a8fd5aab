"""Authentication use cases: turn a presented secret into a principal, or say why not."""

from __future__ import annotations

import uuid

from cairn.auth.store import AuthStore
from cairn.runtime.errors import Unauthenticated
from cairn.runtime.principal import Principal

UNKNOWN_TOKEN = "Invalid Token: Unknown token secret."
EXPIRED_TOKEN = "Invalid Token: Expired auth token."
MISSING_TOKEN = "Unauthorized"
MALFORMED_TOKEN = "Invalid Token: Token secret must be a UUID."


class Authenticator:
    def __init__(self, store: AuthStore) -> None:
        self._store = store

    async def authenticate(self, secret: str) -> Principal:
        if not secret:
            raise Unauthenticated(MISSING_TOKEN)
        try:
            uuid.UUID(secret)
        except ValueError:
            raise Unauthenticated(MALFORMED_TOKEN) from None
        token = await self._store.token_by_secret(secret)
        if token is None:
            raise Unauthenticated(UNKNOWN_TOKEN)
        if token.expired():
            raise Unauthenticated(EXPIRED_TOKEN)
        account = await self._store.account(token.account_id)
        if account is None:
            # The account was deleted after the token was issued.
            raise Unauthenticated(UNKNOWN_TOKEN)
        return Principal(account.id, token.id, account.roles)
