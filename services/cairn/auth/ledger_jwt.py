"""DAML ledger access tokens: JWTs with the `https://daml.com/ledger-api` claims.

The ledger's REST paths and its native gRPC service take `Authorization: Bearer <JWT>` whose
payload carries `{"https://daml.com/ledger-api": {"ledgerId", "applicationId", "actAs",
"readAs"}}`. The modes (`CAIRN_LEDGER_AUTH`) are the ones DAML's own ledgers offer:

* `sandbox`: the token is decoded, not verified, like the DAML sandbox without auth; the
  documented example tokens for Alice and Bob work. For development only.
* `hs256`: signed with the shared secret `CAIRN_LEDGER_JWT_SECRET` (DAML's `hs256-unsafe`).
* `rs256`, `es256`, `es512`: signed with the private key whose public key or certificate is
  `CAIRN_LEDGER_JWT_PUBLIC_KEY` (PEM text or a file path).
* `jwks`: signed with one of the keys of the JWK Set at `CAIRN_LEDGER_JWKS_URL`, chosen by the
  token's `kid`; RSA, EC (P-256/384/521) or Ed25519 keys, never a shared secret. The set is cached
  for `CAIRN_LEDGER_JWKS_CACHE_SECONDS` and fetched again at once when a token names a key id it
  does not hold (a rotation), at most every `CAIRN_LEDGER_JWKS_COOLDOWN_SECONDS`.

Verified modes check `exp` and `nbf` (with `CAIRN_LEDGER_JWT_LEEWAY_SECONDS` of clock skew), and
`aud` / `iss` when `CAIRN_LEDGER_JWT_AUDIENCE` / `CAIRN_LEDGER_JWT_ISSUER` are set. Decoding and
verification are PyJWT's (with `cryptography`); fetching and caching the JWK Set is its
`PyJWKClient`, run in a worker thread because it blocks.

Envoy's ext_authz runs `LedgerJwtAuthorizer` for the ledger paths; on success it passes the
claims to the ledger service in `x-cairn-ledger-claims`, HMAC-signed with the internal secret
like the principal header. The ledger service trusts that header only when it verifies and
otherwise checks the caller's bearer token itself with the same `LedgerTokenPolicy`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cairn.auth.ext_authz import Allow, Deny, HttpRequest, PathMatcher, RequestAuthorizer
from cairn.runtime.callers import bearer_secret
from cairn.runtime.errors import Unauthenticated, Unavailable, quote

CLAIMS_NAMESPACE = "https://daml.com/ledger-api"
CLAIMS_HEADER = "x-cairn-ledger-claims"
# Same lifetime as the principal assertion: long enough for one request, useless for replay.
CLAIMS_TTL_SECONDS = 120
DEFAULT_LEDGER_ID = "MyLedger"
MISSING_TOKEN = "missing Authorization header with OAuth 2.0 Bearer Token"
AUTH_MODES = ("sandbox", "hs256", "rs256", "es256", "es512", "jwks")
# The one algorithm each key mode accepts: a token may not pick another (no alg confusion).
KEY_ALGORITHMS = {"hs256": "HS256", "rs256": "RS256", "es256": "ES256", "es512": "ES512"}
# What a JWK Set key may sign with: public-key algorithms only, never a shared secret.
JWKS_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                             "ES256", "ES384", "ES512", "EdDSA"})
log = structlog.get_logger(__name__)
JWKS_UNAVAILABLE = "The ledger's token keys (JWKS) are unavailable; try again shortly"

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


def encode_jwt_hs256(payload: Mapping[str, Any], secret: str) -> str:
    """A compact HS256 JWS (for tests, tools and the docs' examples)."""
    return jwt.encode(dict(payload), secret, algorithm="HS256")


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
# The curve each elliptic-curve mode's key must be on.
_CURVES = {"es256": ec.SECP256R1, "es512": ec.SECP521R1}


def load_public_key(mode: str, pem_or_path: str) -> PublicKey:
    """The verification key of `mode` from a PEM public key or certificate (text or file)."""
    text = pem_or_path.strip()
    if not text:
        raise ValueError(f"CAIRN_LEDGER_AUTH={mode} needs CAIRN_LEDGER_JWT_PUBLIC_KEY")
    if "-----BEGIN" not in text:
        try:
            text = Path(text).read_text(encoding="ascii")
        except OSError as err:
            raise ValueError(f"CAIRN_LEDGER_JWT_PUBLIC_KEY: cannot read {text!r}: {err}") from None
    try:
        if "-----BEGIN CERTIFICATE" in text:  # DAML's --auth-jwt-*-crt options take certificates
            key: Any = x509.load_pem_x509_certificate(text.encode("ascii")).public_key()
        else:
            key = serialization.load_pem_public_key(text.encode("ascii"))
    except ValueError as err:
        raise ValueError("CAIRN_LEDGER_JWT_PUBLIC_KEY is not a PEM public key or certificate: "
                         f"{err}") from None
    if mode == "rs256" and not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("CAIRN_LEDGER_AUTH=rs256 needs an RSA public key")
    if mode in _CURVES and not (isinstance(key, ec.EllipticCurvePublicKey)
                                and isinstance(key.curve, _CURVES[mode])):
        raise ValueError(f"CAIRN_LEDGER_AUTH={mode} needs an EC public key on curve "
                         f"{_CURVES[mode].name}")
    return key  # type: ignore[no-any-return]


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must not be negative, got {raw!r}")
    return value


@dataclass(frozen=True)
class JwksSettings:
    """Where the JWK Set is and how long its keys are trusted without asking again."""

    url: str
    cache_seconds: float = 300.0
    # After a fetch, a token naming an unknown key id fetches again only after this long, so
    # tokens with made-up key ids cannot turn every request into a fetch.
    cooldown_seconds: float = 10.0
    timeout_seconds: float = 5.0
    ca_file: str = ""


@dataclass(frozen=True)
class LedgerTokenPolicy:
    """How ledger tokens are checked: the mode, its key, the claims required, the ledger id."""

    mode: str = "sandbox"
    ledger_id: str = DEFAULT_LEDGER_ID
    hs256_secret: str = ""
    public_key: PublicKey | None = None
    jwks: JwksSettings | None = None
    audience: tuple[str, ...] = ()
    issuer: str = ""
    leeway_seconds: float = 0.0
    _jwks_client: jwt.PyJWKClient | None = field(default=None, init=False, repr=False,
                                                 compare=False)

    def __post_init__(self) -> None:
        if self.mode not in AUTH_MODES:
            raise ValueError(f"CAIRN_LEDGER_AUTH must be one of {', '.join(AUTH_MODES)}, "
                             f"not {self.mode!r}")
        if self.mode == "hs256" and not self.hs256_secret:
            raise ValueError("CAIRN_LEDGER_AUTH=hs256 needs CAIRN_LEDGER_JWT_SECRET")
        if self.mode in ("rs256", "es256", "es512") and self.public_key is None:
            raise ValueError(f"CAIRN_LEDGER_AUTH={self.mode} needs CAIRN_LEDGER_JWT_PUBLIC_KEY")
        if self.mode == "jwks":
            if self.jwks is None or not self.jwks.url.startswith(("https://", "http://")):
                raise ValueError("CAIRN_LEDGER_AUTH=jwks needs CAIRN_LEDGER_JWKS_URL, "
                                 "an http(s) URL")
            context = (ssl.create_default_context(cafile=self.jwks.ca_file)
                       if self.jwks.ca_file else None)
            client = jwt.PyJWKClient(
                self.jwks.url, cache_keys=False, cache_jwk_set=True,
                lifespan=max(self.jwks.cache_seconds, 0.001), timeout=self.jwks.timeout_seconds,
                ssl_context=context, cooldown_duration=self.jwks.cooldown_seconds,
            )
            object.__setattr__(self, "_jwks_client", client)

    @property
    def verifies(self) -> bool:
        return self.mode != "sandbox"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LedgerTokenPolicy:
        env = os.environ if env is None else env
        mode = env.get("CAIRN_LEDGER_AUTH", "sandbox").strip().lower() or "sandbox"
        jwks = None
        if mode == "jwks":
            defaults = JwksSettings("")
            jwks = JwksSettings(
                url=env.get("CAIRN_LEDGER_JWKS_URL", "").strip(),
                cache_seconds=_number(env, "CAIRN_LEDGER_JWKS_CACHE_SECONDS",
                                      defaults.cache_seconds),
                cooldown_seconds=_number(env, "CAIRN_LEDGER_JWKS_COOLDOWN_SECONDS",
                                         defaults.cooldown_seconds),
                timeout_seconds=_number(env, "CAIRN_LEDGER_JWKS_TIMEOUT_SECONDS",
                                        defaults.timeout_seconds),
                ca_file=env.get("CAIRN_LEDGER_JWKS_CA_FILE", "").strip(),
            )
        audience = tuple(a.strip() for a in env.get("CAIRN_LEDGER_JWT_AUDIENCE", "").split(",")
                         if a.strip())
        return cls(
            mode=mode,
            ledger_id=env.get("CAIRN_LEDGER_ID", DEFAULT_LEDGER_ID) or DEFAULT_LEDGER_ID,
            hs256_secret=env.get("CAIRN_LEDGER_JWT_SECRET", ""),
            public_key=(load_public_key(mode, env.get("CAIRN_LEDGER_JWT_PUBLIC_KEY", ""))
                        if mode in ("rs256", "es256", "es512") else None),
            jwks=jwks,
            audience=audience,
            issuer=env.get("CAIRN_LEDGER_JWT_ISSUER", "").strip(),
            leeway_seconds=_number(env, "CAIRN_LEDGER_JWT_LEEWAY_SECONDS", 0.0),
        )

    async def _key(self, token: str) -> tuple[Any, list[str]]:
        """The key that must have signed `token`, and the one algorithm it may use."""
        if self._jwks_client is None:
            key = self.hs256_secret if self.mode == "hs256" else self.public_key
            return key, [KEY_ALGORITHMS[self.mode]]
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("Invalid access token: its header names no key id (kid)")
        try:
            # PyJWKClient blocks (urllib) when it fetches; keep that off the event loop.
            jwk = await asyncio.to_thread(self._jwks_client.get_signing_key, kid)
        except jwt.PyJWKClientConnectionError:
            raise Unavailable(JWKS_UNAVAILABLE) from None
        except jwt.PyJWKClientError as err:
            if "Unable to find a signing key" in str(err):
                raise TokenError(f"Invalid access token: no key with id {quote(kid)!r} in the "
                                 "ledger's JWKS") from None
            raise Unavailable(JWKS_UNAVAILABLE) from None  # the set itself is unusable
        except jwt.PyJWKError:
            raise Unavailable(JWKS_UNAVAILABLE) from None
        if jwk.algorithm_name not in JWKS_ALGORITHMS:
            raise TokenError(
                f"Invalid access token: key {quote(kid)!r} is not a public signing key"
            )
        return jwk.key, [jwk.algorithm_name]

    async def _payload(self, token: str) -> dict[str, Any]:
        try:
            if not self.verifies:
                payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
                return payload
            key, algorithms = await self._key(token)
            payload = jwt.decode(
                token, key, algorithms=algorithms, audience=self.audience or None,
                issuer=self.issuer or None, leeway=self.leeway_seconds,
                options={"verify_aud": bool(self.audience)},
            )
            return payload
        except jwt.ExpiredSignatureError:
            raise TokenError("Access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("Access token is not yet valid (nbf)") from None
        except jwt.InvalidAudienceError:
            raise TokenError("Invalid access token: audience (aud) does not name this "
                             "ledger") from None
        except jwt.InvalidIssuerError:
            raise TokenError("Invalid access token: unexpected issuer (iss)") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError(f"Invalid access token: alg {quote(repr(_alg(token)))} is not "
                             f"accepted (CAIRN_LEDGER_AUTH={self.mode})") from None
        except jwt.InvalidSignatureError:
            raise TokenError("Invalid access token: signature does not verify") from None
        except jwt.DecodeError:
            raise TokenError("Invalid access token: not a JSON web token") from None
        except jwt.InvalidTokenError as err:
            raise TokenError(f"Invalid access token: {err}") from None

    async def verify(self, token: str) -> LedgerClaims:
        """The claims of an acceptable token; TokenError (401) otherwise.

        Unavailable (503) when the JWK Set is needed and cannot be fetched.
        """
        if not token:
            raise TokenError(MISSING_TOKEN)
        payload = await self._payload(token)
        custom = payload.get(CLAIMS_NAMESPACE)
        if custom is None:
            raise TokenError(f"Invalid access token: no {CLAIMS_NAMESPACE} claims")
        if not isinstance(custom, dict):
            raise TokenError(f"Invalid access token: {CLAIMS_NAMESPACE} must be a JSON object")
        claims = LedgerClaims.from_json(custom)
        if claims.ledger_id and claims.ledger_id != self.ledger_id:
            raise TokenError(f"Ledger ID '{claims.ledger_id}' not found. "
                             f"Actual Ledger ID is '{self.ledger_id}'.")
        return claims


def _alg(token: str) -> object:
    try:
        return jwt.get_unverified_header(token).get("alg")
    except jwt.DecodeError:
        return None


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
            claims = await self._policy.verify(token)
        except (TokenError, Unavailable) as err:
            return Deny(err.http_status, err.message, err.reason)
        return Allow(headers={CLAIMS_HEADER: sign_claims(claims, self._secret)})


def ledger_route(
    internal_secret: str, env: Mapping[str, str] | None = None
) -> tuple[PathMatcher, RequestAuthorizer]:
    """The ext_authz route for the ledger paths, configured from the environment."""
    policy = LedgerTokenPolicy.from_env(env)
    if not policy.verifies:
        log.warning("ledger_tokens_unverified",
                    detail="CAIRN_LEDGER_AUTH=sandbox: ledger JWTs are decoded, not verified; "
                           "anyone can act as any party. Use hs256, rs256, es256, es512 or jwks.")
    return is_ledger_path, LedgerJwtAuthorizer(policy, internal_secret)
