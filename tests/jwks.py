"""Signing keys and a real local JWKS endpoint, for the ledger-token tests at every layer.

`JwksServer` serves a JWK Set over HTTP on a free loopback port from a thread of the test
process; the test changes its keys (a rotation) or takes it down, and counts its fetches.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

JWKS_PATH = "/.well-known/jwks.json"


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs ledger tokens, and its public half as a JWK or PEM."""

    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rs256(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def es256(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def es512(cls, kid: str) -> SigningKey:
        return cls(kid, "ES512", ec.generate_private_key(ec.SECP521R1()))

    def jwk(self) -> dict[str, Any]:
        to_jwk = RSAAlgorithm.to_jwk if self.algorithm.startswith("RS") else ECAlgorithm.to_jwk
        public: dict[str, Any] = to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def token(self, payload: Mapping[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(dict(payload), self.private, algorithm=self.algorithm,
                          headers={"kid": self.kid if kid is None else kid})


@dataclass
class JwksServer:
    """A JWKS endpoint: `url`, the `keys` it serves now, how often it was fetched."""

    url: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    # JWKs served as they are, beside the keys' own (e.g. a shared-secret key that must be refused).
    raw_jwks: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    available: bool = True

    def document(self) -> bytes:
        return json.dumps({"keys": [*(k.jwk() for k in self.keys), *self.raw_jwks]}).encode()


@contextmanager
def jwks_server(*keys: SigningKey) -> Iterator[JwksServer]:
    state = JwksServer(keys=list(keys))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != JWKS_PATH or not state.available:
                self.send_error(404 if state.available else 503)
                return
            state.fetches += 1
            body = state.document()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}{JWKS_PATH}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
