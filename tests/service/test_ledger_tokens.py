"""Ledger JWTs: every mode of `CAIRN_LEDGER_AUTH`, the claims checks, the JWKS cache and
rotation against a real local JWKS endpoint, the ext_authz authorizer and its path matcher."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cairn.auth.ext_authz import Allow, Deny, HttpRequest
from cairn.auth.ledger_jwt import (
    CLAIMS_HEADER,
    JWKS_UNAVAILABLE,
    MISSING_TOKEN,
    LedgerClaims,
    LedgerJwtAuthorizer,
    LedgerTokenPolicy,
    TokenError,
    encode_jwt_hs256,
    is_ledger_path,
    verify_claims,
)
from cairn.runtime.errors import Unavailable
from tests.jwks import SigningKey, jwks_server

from .test_ledger_service import ALICE, BOB

CLAIMS = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger", "applicationId": "app",
                                          "actAs": ["Alice"], "readAs": ["Public"]}}
SECRET = "a-shared-secret-of-at-least-32-bytes!"


def forged_hs256(payload: dict[str, Any], secret: bytes) -> str:
    """An HS256 token keyed with anything (PyJWT itself refuses a PEM as an HMAC secret)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def later(seconds: float) -> int:
    return int(time.time() + seconds)


async def test_sandbox_mode_decodes_the_documented_tokens() -> None:
    policy = LedgerTokenPolicy()
    assert not policy.verifies
    assert await policy.verify(ALICE) == LedgerClaims("MyLedger", "HTTP-JSON-API-Gateway",
                                                      ("Alice",))
    assert (await policy.verify(BOB)).act_as == ("Bob",)
    with pytest.raises(TokenError, match="not a JSON web token"):
        await policy.verify("abc")
    with pytest.raises(TokenError, match=re.escape("no https://daml.com/ledger-api claims")):
        await policy.verify(encode_jwt_hs256({"sub": "x"}, SECRET))
    with pytest.raises(TokenError, match="actAs must be a list"):
        await policy.verify(encode_jwt_hs256({"https://daml.com/ledger-api": {"actAs": "A"}},
                                             SECRET))
    with pytest.raises(TokenError, match=MISSING_TOKEN):
        await policy.verify("")


async def test_hs256_mode_verifies_the_shared_secret() -> None:
    policy = LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "hs256",
                                         "CAIRN_LEDGER_JWT_SECRET": SECRET})
    assert (await policy.verify(encode_jwt_hs256(CLAIMS, SECRET))).act_as == ("Alice",)
    with pytest.raises(TokenError, match="signature does not verify"):
        await policy.verify(encode_jwt_hs256(CLAIMS, SECRET + "x"))
    with pytest.raises(TokenError, match="signature does not verify"):
        await policy.verify(ALICE)  # the documentation's token, signed with another secret
    with pytest.raises(TokenError, match="alg 'none' is not accepted"):
        await policy.verify(jwt.encode(CLAIMS, None, algorithm="none"))


@pytest.mark.parametrize("make", [SigningKey.rs256, SigningKey.es256, SigningKey.es512])
async def test_public_key_modes_verify_with_the_pem_key_or_certificate(
    make: Any, tmp_path: Path,
) -> None:
    key: SigningKey = make("k1")
    mode = key.algorithm.lower()
    (tmp_path / "ledger.pem").write_text(key.public_pem())
    from_file = LedgerTokenPolicy.from_env({
        "CAIRN_LEDGER_AUTH": mode, "CAIRN_LEDGER_JWT_PUBLIC_KEY": str(tmp_path / "ledger.pem")})
    claims = await from_file.verify(key.token(CLAIMS))
    assert claims == LedgerClaims("MyLedger", "app", ("Alice",), ("Public",))
    assert claims.readers == {"Alice", "Public"}
    # A certificate works too (DAML's --auth-jwt-<alg>-crt options take certificates).
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ledger")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.private.public_key()).serial_number(1)
                   .not_valid_before(now).not_valid_after(now + timedelta(days=1))
                   .sign(key.private, hashes.SHA256()))
    from_certificate = LedgerTokenPolicy.from_env({
        "CAIRN_LEDGER_AUTH": mode,
        "CAIRN_LEDGER_JWT_PUBLIC_KEY": certificate.public_bytes(Encoding.PEM).decode()})
    assert (await from_certificate.verify(key.token(CLAIMS))).act_as == ("Alice",)
    other: SigningKey = make("k2")
    with pytest.raises(TokenError, match="signature does not verify"):
        await from_file.verify(other.token(CLAIMS))
    # Algorithm confusion: the public key's PEM used as an HMAC secret must not verify.
    with pytest.raises(TokenError, match="alg 'HS256' is not accepted"):
        await from_file.verify(forged_hs256(CLAIMS, key.public_pem().encode()))


async def test_exp_nbf_aud_iss_and_leeway() -> None:
    env = {"CAIRN_LEDGER_AUTH": "hs256", "CAIRN_LEDGER_JWT_SECRET": SECRET}
    policy = LedgerTokenPolicy.from_env(env)
    with pytest.raises(TokenError, match="Access token has expired"):
        await policy.verify(encode_jwt_hs256({**CLAIMS, "exp": later(-5)}, SECRET))
    with pytest.raises(TokenError, match="not yet valid"):
        await policy.verify(encode_jwt_hs256({**CLAIMS, "nbf": later(5)}, SECRET))
    assert await policy.verify(encode_jwt_hs256({**CLAIMS, "exp": later(60)}, SECRET))
    # Without a configured audience, a token's aud is not checked.
    assert await policy.verify(encode_jwt_hs256({**CLAIMS, "aud": "elsewhere"}, SECRET))

    lenient = LedgerTokenPolicy.from_env({**env, "CAIRN_LEDGER_JWT_LEEWAY_SECONDS": "30"})
    assert await lenient.verify(encode_jwt_hs256({**CLAIMS, "exp": later(-5)}, SECRET))
    assert await lenient.verify(encode_jwt_hs256({**CLAIMS, "nbf": later(5)}, SECRET))

    strict = LedgerTokenPolicy.from_env({**env, "CAIRN_LEDGER_JWT_AUDIENCE": "ledger-a, ledger-b",
                                         "CAIRN_LEDGER_JWT_ISSUER": "https://issuer.example"})
    good = {**CLAIMS, "aud": "ledger-b", "iss": "https://issuer.example"}
    assert await strict.verify(encode_jwt_hs256(good, SECRET))
    with pytest.raises(TokenError, match="audience"):
        await strict.verify(encode_jwt_hs256({**good, "aud": "other"}, SECRET))
    with pytest.raises(TokenError, match="aud"):
        await strict.verify(encode_jwt_hs256({k: v for k, v in good.items() if k != "aud"},
                                             SECRET))
    with pytest.raises(TokenError, match="issuer"):
        await strict.verify(encode_jwt_hs256({**good, "iss": "https://other.example"}, SECRET))


def jwks_policy(url: str, **extra: str) -> LedgerTokenPolicy:
    return LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "jwks", "CAIRN_LEDGER_JWKS_URL": url,
                                       "CAIRN_LEDGER_JWKS_COOLDOWN_SECONDS": "0", **extra})


async def test_jwks_mode_rs256_and_es256_keys_are_cached_and_rotated() -> None:
    rsa_key, ec_key = SigningKey.rs256("rsa-1"), SigningKey.es256("ec-1")
    with jwks_server(rsa_key, ec_key) as server:
        policy = jwks_policy(server.url)
        assert (await policy.verify(rsa_key.token(CLAIMS))).act_as == ("Alice",)
        assert (await policy.verify(ec_key.token(CLAIMS))).act_as == ("Alice",)
        assert server.fetches == 1  # one fetch, then the cached set
        # Rotation: the issuer publishes a new key and signs with it; its unknown kid makes the
        # policy fetch the set again, once.
        rotated = SigningKey.es256("ec-2")
        server.keys = [rsa_key, rotated]
        assert (await policy.verify(rotated.token(CLAIMS))).act_as == ("Alice",)
        assert server.fetches == 2
        assert await policy.verify(rotated.token(CLAIMS))
        assert server.fetches == 2
        # A key id the set does not have, a key that is not in the set under that id.
        with pytest.raises(TokenError, match="no key with id 'nobody'"):
            await policy.verify(rotated.token(CLAIMS, kid="nobody"))
        with pytest.raises(TokenError, match="signature does not verify"):
            await policy.verify(SigningKey.es256("x").token(CLAIMS, kid="ec-2"))
        with pytest.raises(TokenError, match="names no key id"):
            await policy.verify(jwt.encode(CLAIMS, rsa_key.private, algorithm="RS256"))
        # A token may not pick another algorithm than its key's.
        with pytest.raises(TokenError, match="not accepted"):
            await policy.verify(jwt.encode(CLAIMS, rsa_key.private, algorithm="RS512",
                                           headers={"kid": "rsa-1"}))


async def test_jwks_cache_expires_and_unknown_kids_wait_for_the_cooldown() -> None:
    key = SigningKey.rs256("k1")
    with jwks_server(key) as server:
        policy = jwks_policy(server.url, CAIRN_LEDGER_JWKS_CACHE_SECONDS="0.5",
                             CAIRN_LEDGER_JWKS_COOLDOWN_SECONDS="60")
        assert await policy.verify(key.token(CLAIMS))
        # Made-up key ids cannot make every request a fetch: within the cooldown, no refetch.
        for _ in range(3):
            with pytest.raises(TokenError, match="no key with id"):
                await policy.verify(key.token(CLAIMS, kid="made-up"))
        assert server.fetches == 1
        await asyncio.sleep(0.6)  # the cached set expires: the next token fetches it again
        assert await policy.verify(key.token(CLAIMS))
        assert server.fetches == 2


async def test_jwks_unreachable_is_unavailable_not_unauthenticated() -> None:
    key = SigningKey.es256("k1")
    with jwks_server(key) as server:
        server.available = False
        policy = jwks_policy(server.url)
        with pytest.raises(Unavailable, match=re.escape(JWKS_UNAVAILABLE)):
            await policy.verify(key.token(CLAIMS))
        server.available = True
        assert await policy.verify(key.token(CLAIMS))
        authorizer = LedgerJwtAuthorizer(policy, "secret")
        server.available = False
        denied = await authorizer.check(HttpRequest(
            "GET", "/v1/query", {"authorization": f"Bearer {key.token(CLAIMS, kid='k9')}"}))
        assert denied == Deny(503, JWKS_UNAVAILABLE)


async def test_jwks_sets_with_shared_secrets_are_refused() -> None:
    with jwks_server() as server:
        server.raw_jwks = [{"kty": "oct", "kid": "s",
                            "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQ"}]
        policy = jwks_policy(server.url)
        token = jwt.encode(CLAIMS, b"secret-secret-secret-secret-secret-secret", algorithm="HS256",
                           headers={"kid": "s"})
        with pytest.raises(TokenError, match="not a public signing key"):
            await policy.verify(token)


def test_configuration_errors_name_the_variable() -> None:
    with pytest.raises(ValueError, match="CAIRN_LEDGER_JWT_SECRET"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "hs256"})
    with pytest.raises(ValueError, match="CAIRN_LEDGER_AUTH must be one of"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "none"})
    with pytest.raises(ValueError, match="CAIRN_LEDGER_JWT_PUBLIC_KEY"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "rs256",
                                    "CAIRN_LEDGER_JWT_PUBLIC_KEY": "/no/such/key.pem"})
    with pytest.raises(ValueError, match="CAIRN_LEDGER_JWT_PUBLIC_KEY"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "es256"})
    p521, p256 = SigningKey.es512("k").public_pem(), SigningKey.es256("k").public_pem()
    with pytest.raises(ValueError, match="curve secp256r1"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "es256",
                                    "CAIRN_LEDGER_JWT_PUBLIC_KEY": p521})
    with pytest.raises(ValueError, match="RSA public key"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "rs256",
                                    "CAIRN_LEDGER_JWT_PUBLIC_KEY": p256})
    with pytest.raises(ValueError, match="CAIRN_LEDGER_JWKS_URL"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "jwks"})
    with pytest.raises(ValueError, match="CAIRN_LEDGER_JWT_LEEWAY_SECONDS"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_JWT_LEEWAY_SECONDS": "-1"})
    with pytest.raises(ValueError, match="CAIRN_LEDGER_JWKS_CACHE_SECONDS"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "jwks",
                                    "CAIRN_LEDGER_JWKS_URL": "http://127.0.0.1:1/jwks",
                                    "CAIRN_LEDGER_JWKS_CACHE_SECONDS": "soon"})
    assert LedgerTokenPolicy.from_env({"CAIRN_LEDGER_ID": "Other"}).ledger_id == "Other"


async def test_authorizer_passes_signed_claims_and_denies_bad_tokens() -> None:
    authorizer = LedgerJwtAuthorizer(LedgerTokenPolicy(), "secret")
    allowed = await authorizer.check(HttpRequest("POST", "/v1/create",
                                                 {"authorization": f"Bearer {ALICE}"}))
    assert isinstance(allowed, Allow)
    assert allowed.principal is None
    assert "authorization" in allowed.remove
    claims = verify_claims(allowed.headers[CLAIMS_HEADER], "secret")
    assert claims == LedgerClaims("MyLedger", "HTTP-JSON-API-Gateway", ("Alice",))
    assert verify_claims(allowed.headers[CLAIMS_HEADER], "other") is None
    assert await authorizer.check(HttpRequest("GET", "/v1/query", {})) == Deny(401, MISSING_TOKEN)
    wrong_ledger = encode_jwt_hs256({"https://daml.com/ledger-api": {"ledgerId": "X"}}, SECRET)
    denied = await authorizer.check(HttpRequest("GET", "/v1/parties",
                                                {"authorization": f"Bearer {wrong_ledger}"}))
    assert denied == Deny(401, "Ledger ID 'X' not found. Actual Ledger ID is 'MyLedger'.")


@pytest.mark.parametrize(("path", "ledger"), [
    ("/v1/create", True), ("/v1/create-and-exercise", True), ("/v1/exercise", True),
    ("/v1/fetch", True), ("/v1/query", True), ("/v1/query?x=1", True), ("/v1/parties", True),
    ("/v1/parties/allocate", True), ("/v1/packages", True), ("/v1/packages/ab12", True),
    ("/v1/stream/query", True), ("/v1/user", True), ("/v1/users", True),
    ("/cairn.ledger.v1.LedgerService/Create", True),
    ("/v1/projects", False), ("/v1/components", False), ("/v1/createx", False),
    ("/v1/queryable", False), ("/cairn.project.v1.ProjectService/GetProject", False),
])
def test_ledger_paths(path: str, ledger: bool) -> None:
    assert is_ledger_path(path) is ledger
