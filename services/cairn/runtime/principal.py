"""Who is calling: the principal, and the signed header that carries it from Envoy to services.

Envoy's ext_authz (the auth service) authenticates the bearer token once per request and sets
`x-cairn-principal` to an HMAC-signed assertion. Services trust that header only when the
signature verifies with the shared internal secret, so a client reaching a service directly cannot
forge it; such a client is authenticated from its own bearer token instead (see `callers`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

PRINCIPAL_HEADER = "x-cairn-principal"
# Long enough for any single request to reach its service, short enough to make replay useless.
ASSERTION_TTL_SECONDS = 120


@dataclass(frozen=True)
class Principal:
    account_id: str
    token_id: str = ""
    roles: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return "Admin" in self.roles


# Who a Cairn service is when it calls another on nobody's behalf (e.g. to authenticate a token
# it was given). Not an account: it holds no roles and owns nothing.
SERVICE = Principal("cairn-service")


def _mac(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def sign(principal: Principal, secret: str, now: float | None = None) -> str:
    claims = {
        "sub": principal.account_id,
        "tid": principal.token_id,
        "roles": list(principal.roles),
        "exp": int((now or time.time()) + ASSERTION_TTL_SECONDS),
    }
    payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload.decode()}.{_mac(secret, payload)}"


def _claims(assertion: str, secret: str) -> tuple[Principal, float] | None:
    """The principal and expiry (epoch seconds) of an assertion whose signature verifies."""
    payload, _, mac = assertion.partition(".")
    if not payload or not secret or not hmac.compare_digest(_mac(secret, payload.encode()), mac):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
        expires = claims["exp"]
        if not isinstance(expires, int | float):
            return None
        return Principal(str(claims["sub"]), str(claims["tid"]), tuple(claims["roles"])), expires
    except (ValueError, KeyError, TypeError):
        return None


def verify(assertion: str, secret: str, now: float | None = None) -> Principal | None:
    """The principal of a valid, unexpired assertion; None for anything else."""
    verified = _claims(assertion, secret)
    if verified is None or verified[1] < (now or time.time()):
        return None
    return verified[0]


# Distinct assertions a Verifier remembers (cleared when full).
VERIFIED_MAX = 10_000


class Verifier:
    """`verify` with the shared secret, remembering each assertion that verified until it
    expires: ext_authz reuses one assertion per principal for a second, so a busy service
    checks the HMAC and decodes the claims once, not on every call (~6 µs each)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._verified: dict[str, tuple[Principal, float]] = {}

    def __call__(self, assertion: str, now: float | None = None) -> Principal | None:
        now = now or time.time()
        known = self._verified.get(assertion)
        if known is None:
            known = _claims(assertion, self._secret)
            if known is None:
                return None
            if len(self._verified) >= VERIFIED_MAX:
                self._verified.clear()
            self._verified[assertion] = known
        return None if known[1] < now else known[0]
