"""End-to-end: ledger JWTs verified against a JWK Set served by a real local endpoint.

A stack of its own runs with `CAIRN_LEDGER_AUTH=jwks` and an audience. Tokens signed with an
RSA (RS256) and an EC (ES256) key go through the real Envoy: ext_authz in the auth process
verifies REST calls, the ledger process itself verifies WebSocket upgrades. The issuer then
rotates to a new key id, which must be fetched once and then served from the cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.jwks import JwksServer, SigningKey, jwks_server

from .conftest import RunningStack, running_stack

pytestmark = pytest.mark.e2e

AUDIENCE = "https://cairn.example/ledger"
RSA_KEY, EC_KEY = SigningKey.rs256("rsa-2026-01"), SigningKey.es256("ec-2026-01")


def claims(party: str, **extra: Any) -> dict[str, Any]:
    return {"https://daml.com/ledger-api": {"ledgerId": "MyLedger", "applicationId": "jwks-e2e",
                                            "actAs": [party]},
            # Far enough ahead to outlive a long suite: parameters are built at collection.
            "aud": AUDIENCE, "exp": int(time.time()) + 24 * 3600, **extra}


@pytest.fixture(scope="module")
def issuer() -> Iterator[JwksServer]:
    with jwks_server(RSA_KEY, EC_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def jwks_stack(issuer: JwksServer, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[RunningStack]:
    env = {"CAIRN_LEDGER_AUTH": "jwks", "CAIRN_LEDGER_JWKS_URL": issuer.url,
           "CAIRN_LEDGER_JWT_AUDIENCE": AUDIENCE,
           # A rotated key is fetched at once here; the cooldown has its own unit test.
           "CAIRN_LEDGER_JWKS_COOLDOWN_SECONDS": "0"}
    with running_stack(tmp_path_factory.mktemp("jwks-stack"), env) as running:
        yield running


@pytest.fixture(scope="module")
def client(jwks_stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=jwks_stack.base_url, timeout=30) as http:
        yield http


def parties(client: httpx.Client, token: str) -> httpx.Response:
    return client.get("/v1/parties", headers={"Authorization": f"Bearer {token}"})


def test_rs256_and_es256_tokens_from_the_jwks_are_accepted(
    client: httpx.Client, issuer: JwksServer,
) -> None:
    for key in (RSA_KEY, EC_KEY):
        reply = parties(client, key.token(claims("Alice")))
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == 200
    created = client.post("/v1/parties/allocate", json={"identifierHint": "JwksBob"},
                          headers={"Authorization": f"Bearer {EC_KEY.token(claims('Alice'))}"})
    assert created.status_code == 200, created.text
    assert issuer.fetches >= 1


@pytest.mark.parametrize(("payload", "key", "message"), [
    (claims("Alice", aud="https://elsewhere.example"), EC_KEY,
     "Invalid access token: audience (aud) does not name this ledger"),
    (claims("Alice", exp=int(time.time()) - 60), RSA_KEY, "Access token has expired"),
    (claims("Alice"), SigningKey.es256("ec-2026-01"),  # right key id, wrong key
     "Invalid access token: signature does not verify"),
])
def test_bad_tokens_are_401_with_the_json_api_error(
    client: httpx.Client, payload: dict[str, Any], key: SigningKey, message: str,
) -> None:
    reply = parties(client, key.token(payload))
    assert reply.status_code == 401
    assert reply.json() == {"status": 401, "errors": [message]}


def test_a_rotated_key_id_is_fetched_once_then_cached(
    client: httpx.Client, issuer: JwksServer,
) -> None:
    assert parties(client, RSA_KEY.token(claims("Alice"))).status_code == 200
    before = issuer.fetches
    rotated = SigningKey.es256("ec-2026-02")
    token = rotated.token(claims("Alice"))
    assert parties(client, token).status_code == 401  # not published yet
    issuer.keys = [RSA_KEY, rotated]
    for _ in range(3):
        reply = parties(client, token)
        assert reply.status_code == 200, reply.text
    # One fetch for the unpublished id, one that found the new key, none after that.
    assert issuer.fetches == before + 2


async def test_the_ledger_process_verifies_stream_tokens_with_the_jwks(
    jwks_stack: RunningStack,
) -> None:
    url = jwks_stack.base_url.replace("http://", "ws://") + "/v1/stream/query"
    token = RSA_KEY.token(claims("Alice"))
    offered = [f"jwt.token.{token}", "daml.ws.auth"]
    async with connect(url, subprotocols=offered) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "daml.ws.auth"  # the upgrade passed the ledger's own check
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, subprotocols=[  # type: ignore[list-item]
            f"jwt.token.{EC_KEY.token(claims('Alice', aud='other'))}", "daml.ws.auth"])
    assert refused.value.response.status_code == 401
