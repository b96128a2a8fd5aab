"""Ledger JWTs: sandbox and verified modes, the ext_authz authorizer and its path matcher."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cairn.auth.ext_authz import Allow, Deny, HttpRequest
from cairn.auth.ledger_jwt import (
    CLAIMS_HEADER,
    MISSING_TOKEN,
    LedgerClaims,
    LedgerJwtAuthorizer,
    LedgerTokenPolicy,
    TokenError,
    encode_jwt_hs256,
    encode_jwt_rs256,
    is_ledger_path,
    verify_claims,
)

from .test_ledger_service import ALICE, BOB

CLAIMS = {"https://daml.com/ledger-api": {"ledgerId": "MyLedger", "applicationId": "app",
                                          "actAs": ["Alice"], "readAs": ["Public"]}}


def test_sandbox_mode_decodes_the_documented_tokens() -> None:
    policy = LedgerTokenPolicy()
    assert policy.verify(ALICE) == LedgerClaims("MyLedger", "HTTP-JSON-API-Gateway", ("Alice",))
    assert policy.verify(BOB).act_as == ("Bob",)
    with pytest.raises(TokenError, match="three dot-separated parts"):
        policy.verify("abc")
    with pytest.raises(TokenError, match=re.escape("no https://daml.com/ledger-api claims")):
        policy.verify(encode_jwt_hs256({"sub": "x"}, "k"))
    with pytest.raises(TokenError, match="actAs must be a list"):
        policy.verify(encode_jwt_hs256({"https://daml.com/ledger-api": {"actAs": "Alice"}}, "k"))
    with pytest.raises(TokenError, match=MISSING_TOKEN):
        policy.verify("")


def test_rs256_mode_verifies_with_the_public_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "ledger.pem").write_bytes(pem)
    key_file = str(tmp_path / "ledger.pem")
    policy = LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "rs256",
                                         "CAIRN_LEDGER_JWT_PUBLIC_KEY": key_file})
    claims = policy.verify(encode_jwt_rs256(CLAIMS, key))
    assert claims == LedgerClaims("MyLedger", "app", ("Alice",), ("Public",))
    assert claims.readers == {"Alice", "Public"}
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenError, match="signature does not verify"):
        policy.verify(encode_jwt_rs256(CLAIMS, other))
    with pytest.raises(TokenError, match="expected alg RS256"):
        policy.verify(encode_jwt_hs256(CLAIMS, "secret"))
    inline = LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "rs256",
                                         "CAIRN_LEDGER_JWT_PUBLIC_KEY": pem.decode()})
    assert inline.verify(encode_jwt_rs256(CLAIMS, key)).act_as == ("Alice",)


def test_configuration_errors_name_the_variable() -> None:
    with pytest.raises(ValueError, match="CAIRN_LEDGER_JWT_SECRET"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "hs256"})
    with pytest.raises(ValueError, match="CAIRN_LEDGER_AUTH must be one of"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "none"})
    with pytest.raises(ValueError, match="CAIRN_LEDGER_JWT_PUBLIC_KEY"):
        LedgerTokenPolicy.from_env({"CAIRN_LEDGER_AUTH": "rs256",
                                    "CAIRN_LEDGER_JWT_PUBLIC_KEY": "/no/such/key.pem"})
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
    wrong_ledger = encode_jwt_hs256({"https://daml.com/ledger-api": {"ledgerId": "X"}}, "k")
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
