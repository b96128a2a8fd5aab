"""DAML ledger access tokens: JWTs with the `https://daml.com/ledger-api` claims.

The ledger's REST paths and its native gRPC service take `Authorization: Bearer <JWT>` whose
payload carries `{"https://daml.com/ledger-api": {"ledgerId", "applicationId", "actAs",
"readAs"}}`. Two modes, chosen by `CAIRN_LEDGER_AUTH`:

* `sandbox` (default): the token is decoded, not verified, like the DAML sandbox without auth;
  the documented example tokens for Alice and Bob work.
* `hs256` / `rs256`: the signature must verify with `CAIRN_LEDGER_JWT_SECRET` or the PEM public
  key in `CAIRN_LEDGER_JWT_PUBLIC_KEY` (PEM text or a file path), and `exp` is enforced.

Envoy's ext_authz runs `LedgerJwtAuthorizer` for the ledger paths; on success it passes the
claims to the ledger service in `x-cairn-ledger-claims`, HMAC-signed with the internal secret
like the principal header. The ledger service trusts that header only when it verifies and
otherwise checks the caller's bearer token itself with the same `LedgerTokenPolicy`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cairn.auth.ext_authz import Allow, Deny, HttpRequest, PathMatcher, RequestAuthorizer
from cairn.runtime.callers import bearer_secret
from cairn.runtime.errors import Unauthenticated

CLAIMS_NAMESPACE = "https://daml.com/ledger-api"
CLAIMS_HEADER = "x-cairn-ledger-claims"
# Same lifetime as the principal assertion: long enough for one request, useless for replay.
CLAIMS_TTL_SECONDS = 120
DEFAULT_LEDGER_ID = "MyLedger"
MISSING_TOKEN = "missing Authorization header with OAuth 2.0 Bearer Token"
AUTH_MODES = ("sandbox", "hs256", "rs256")

# REST paths of the DAML JSON API and the ledger's native gRPC service.
_LEDGER_PATH = re.compile(
    r"^/(v1/(create|exercise|fetch|query|parties|packages|stream|users?|refresh)"
    r"([/?-].*)?$|cairn[.]ledger[.])"
)


class TokenError(Unauthenticated):
    """The bearer token is missing, malformed, unverifiable or lacks a required claim."""


@dataclass(frozen=True)
class LedgerClaims:
    """What a ledger token grants; empty strings and tuples when the token does not say."""

    ledger_id: str = ""
    application_id: str = ""
    act_as: tuple[str, ...] = ()
    read_as: tuple[str, ...] = ()

    @property
    def readers(self) -> frozenset[str]:
        """Every party whose contracts the caller may read."""
        return frozenset(self.act_as) | frozenset(self.read_as)

    def to_json(self) -> dict[str, Any]:
        return {
            "ledgerId": self.ledger_id,
            "applicationId": self.application_id,
            "actAs": list(self.act_as),
            "readAs": list(self.read_as),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerClaims:
        """Claims from the `https://daml.com/ledger-api` object; TokenError on wrong types."""

        def text(name: str) -> str:
            value = data.get(name)
            if value is None:
                return ""
            if not isinstance(value, str):
                raise TokenError(f"Invalid access token: {name} must be a string")
            return value

        def parties(name: str) -> tuple[str, ...]:
            value = data.get(name)
            if value is None:
                return ()
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise TokenError(f"Invalid access token: {name} must be a list of party names")
            return tuple(value)

        return cls(text("ledgerId"), text("applicationId"), parties("actAs"), parties("readAs"))


def _b64decode(segment: str) -> bytes:
    padded = segment + "=" * (-len(segment) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class DecodedJwt:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def decode_jwt(token: str) -> DecodedJwt:
    """Split and decode a compact JWS without verifying it; TokenError when malformed."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("Invalid access token: a JWT has three dot-separated parts")
    try:
        header = json.loads(_b64decode(parts[0]))
        payload = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise TokenError("Invalid access token: not a base64url-encoded JSON web token") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise TokenError("Invalid access token: header and payload must be JSON objects")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return DecodedJwt(header, payload, signing_input, signature)


def encode_jwt_hs256(payload: Mapping[str, Any], secret: str) -> str:
    """A compact HS256 JWS (for tests, tools and the docs' examples)."""
    header = _b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64encode(mac)}"


def encode_jwt_rs256(payload: Mapping[str, Any], private_key: rsa.RSAPrivateKey) -> str:
    """A compact RS256 JWS (for tests and tools)."""
    header = _b64encode(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    signature = private_key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{_b64encode(signature)}"


def _load_public_key(pem_or_path: str) -> rsa.RSAPublicKey:
    text = pem_or_path.strip()
    if "-----BEGIN" not in text:
        try:
            text = Path(text).read_text(encoding="ascii")
        except OSError as err:
            raise ValueError(f"CAIRN_LEDGER_JWT_PUBLIC_KEY: cannot read {text!r}: {err}") from None
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except ValueError as err:
        raise ValueError(f"CAIRN_LEDGER_JWT_PUBLIC_KEY is not a PEM public key: {err}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("CAIRN_LEDGER_JWT_PUBLIC_KEY must be an RSA public key")
    return key


@dataclass(frozen=True)
class LedgerTokenPolicy:
    """How ledger tokens are checked: the mode, its key, and the ledger id tokens must name."""

    mode: str = "sandbox"
    ledger_id: str = DEFAULT_LEDGER_ID
    hs256_secret: str = ""
    rs256_public_key: rsa.RSAPublicKey | None = None

    def __post_init__(self) -> None:
        if self.mode not in AUTH_MODES:
            raise ValueError(f"CAIRN_LEDGER_AUTH must be one of {', '.join(AUTH_MODES)}, "
                             f"not {self.mode!r}")
        if self.mode == "hs256" and not self.hs256_secret:
            raise ValueError("CAIRN_LEDGER_AUTH=hs256 needs CAIRN_LEDGER_JWT_SECRET")
        if self.mode == "rs256" and self.rs256_public_key is None:
            raise ValueError("CAIRN_LEDGER_AUTH=rs256 needs CAIRN_LEDGER_JWT_PUBLIC_KEY")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LedgerTokenPolicy:
        env = os.environ if env is None else env
        mode = env.get("CAIRN_LEDGER_AUTH", "sandbox").strip().lower() or "sandbox"
        public_key = env.get("CAIRN_LEDGER_JWT_PUBLIC_KEY", "")
        return cls(
            mode=mode,
            ledger_id=env.get("CAIRN_LEDGER_ID", DEFAULT_LEDGER_ID) or DEFAULT_LEDGER_ID,
            hs256_secret=env.get("CAIRN_LEDGER_JWT_SECRET", ""),
            rs256_public_key=_load_public_key(public_key) if mode == "rs256" else None,
        )

    def _verify_signature(self, jwt: DecodedJwt) -> None:
        algorithm = jwt.header.get("alg")
        if self.mode == "hs256":
            if algorithm != "HS256":
                raise TokenError(f"Invalid access token: expected alg HS256, got {algorithm!r}")
            expected = hmac.new(self.hs256_secret.encode(), jwt.signing_input,
                                hashlib.sha256).digest()
            if not hmac.compare_digest(expected, jwt.signature):
                raise TokenError("Invalid access token: signature does not verify")
        elif self.mode == "rs256":
            if algorithm != "RS256":
                raise TokenError(f"Invalid access token: expected alg RS256, got {algorithm!r}")
            assert self.rs256_public_key is not None
            try:
                self.rs256_public_key.verify(jwt.signature, jwt.signing_input,
                                             padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                raise TokenError("Invalid access token: signature does not verify") from None

    def verify(self, token: str, now: float | None = None) -> LedgerClaims:
        """The claims of an acceptable token; TokenError (401) otherwise."""
        if not token:
            raise TokenError(MISSING_TOKEN)
        jwt = decode_jwt(token)
        if self.mode != "sandbox":
            self._verify_signature(jwt)
            expires = jwt.payload.get("exp")
            if expires is not None:
                if not isinstance(expires, int | float) or isinstance(expires, bool):
                    raise TokenError("Invalid access token: exp must be a number")
                if expires < (time.time() if now is None else now):
                    raise TokenError("Access token has expired")
        custom = jwt.payload.get(CLAIMS_NAMESPACE)
        if custom is None:
            raise TokenError(f"Invalid access token: no {CLAIMS_NAMESPACE} claims")
        if not isinstance(custom, dict):
            raise TokenError(f"Invalid access token: {CLAIMS_NAMESPACE} must be a JSON object")
        claims = LedgerClaims.from_json(custom)
        if claims.ledger_id and claims.ledger_id != self.ledger_id:
            raise TokenError(f"Ledger ID '{claims.ledger_id}' not found. "
                             f"Actual Ledger ID is '{self.ledger_id}'.")
        return claims


def _mac(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def sign_claims(claims: LedgerClaims, secret: str, now: float | None = None) -> str:
    """The value of `x-cairn-ledger-claims` for verified claims."""
    body = {**claims.to_json(), "exp": int((now or time.time()) + CLAIMS_TTL_SECONDS)}
    payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload.decode()}.{_mac(secret, payload)}"


def verify_claims(assertion: str, secret: str, now: float | None = None) -> LedgerClaims | None:
    """The claims of a valid, unexpired assertion; None for anything else."""
    payload, _, mac = assertion.partition(".")
    if not payload or not secret or not hmac.compare_digest(_mac(secret, payload.encode()), mac):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(payload))
        if body["exp"] < (now or time.time()):
            return None
        return LedgerClaims.from_json(body)
    except (ValueError, KeyError, TypeError, TokenError):
        return None


def is_ledger_path(path: str) -> bool:
    """True for the DAML JSON API's REST paths and the ledger's gRPC methods."""
    return _LEDGER_PATH.match(path) is not None


class LedgerJwtAuthorizer:
    """ext_authz for the ledger paths: a valid ledger JWT, passed on as signed claims."""

    def __init__(self, policy: LedgerTokenPolicy, internal_secret: str) -> None:
        self._policy = policy
        self._secret = internal_secret

    async def check(self, request: HttpRequest) -> Allow | Deny:
        token = bearer_secret(request.headers.get("authorization", ""))
        try:
            claims = self._policy.verify(token)
        except TokenError as err:
            return Deny(err.http_status, err.message)
        return Allow(headers={CLAIMS_HEADER: sign_claims(claims, self._secret)})


def ledger_route(
    internal_secret: str, env: Mapping[str, str] | None = None
) -> tuple[PathMatcher, RequestAuthorizer]:
    """The ext_authz route for the ledger paths, configured from the environment."""
    return is_ledger_path, LedgerJwtAuthorizer(LedgerTokenPolicy.from_env(env), internal_secret)
