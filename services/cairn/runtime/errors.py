"""The one error model: domain errors, their gRPC codes, and the exact REST bodies clients see.

Handlers raise `ServiceError` subclasses; the server interceptor (runtime.server) turns them into a
gRPC status plus `x-http-status`/`x-http-body` trailing metadata, which Envoy's Lua shaper
(envoy/rest_shaper.lua) turns into the documented HTTP status and JSON body.
"""

from __future__ import annotations

import enum
import json
import re

import grpc

from cairn.blobstore.errors import BlobStoreUnavailable
from cairn.runtime.redis import is_unavailable as redis_unavailable

# A lone UTF-16 surrogate: not a Unicode scalar value, so not encodable as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
# The longest error message sent: grpc-message and x-http-body travel as HTTP/2 headers, and an
# over-long header list makes Envoy reset the stream (502/503) instead of passing the error on.
MAX_MESSAGE_CHARS = 1000
# How much of a client's input an error message quotes.
QUOTE_CHARS = 64


def safe_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` fit for a message: lone surrogates replaced (U+FFFD), at most `limit` chars."""
    text = _SURROGATE.sub("\ufffd", text)
    return text if len(text) <= limit else text[:limit] + "..."


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """A short, safe prefix of a client's input for an error message (`...` marks a cut)."""
    return safe_text(value if isinstance(value, str) else repr(value), limit)


class ErrorStyle(enum.Enum):
    """How an API family spells its error bodies."""

    # Golem: 400 {"errors":[...]}, everything else {"error":"..."}.
    GOLEM = "golem"
    # DAML JSON API: {"status":N,"errors":[...]}.
    LEDGER = "ledger"


class ServiceError(Exception):
    """A failure the client caused or must know about; carries its HTTP and gRPC status."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL

    def __init__(self, *messages: str) -> None:
        safe = tuple(safe_text(m) for m in messages)
        super().__init__(*safe)
        self.messages: tuple[str, ...] = safe or ("Internal server error",)

    @property
    def message(self) -> str:
        return safe_text("; ".join(self.messages))

    def rest_body(self, style: ErrorStyle) -> str:
        if style is ErrorStyle.LEDGER:
            body: dict[str, object] = {"status": self.http_status, "errors": list(self.messages)}
        elif self.http_status == 400:
            body = {"errors": list(self.messages)}
        else:
            body = {"error": self.message}
        # ASCII-only: the body travels as a gRPC metadata value.
        return json.dumps(body, ensure_ascii=True, separators=(",", ":"))


class InvalidRequest(ServiceError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(ServiceError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    """Golem answers authorization failures with 401, not 403."""

    http_status = 401
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class LimitExceeded(ServiceError):
    http_status = 403
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotFound(ServiceError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    http_status = 409
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(ServiceError):
    http_status = 409
    grpc_code = grpc.StatusCode.ABORTED


class Internal(ServiceError):
    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class Unavailable(ServiceError):
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


REDIS_UNAVAILABLE = "The state store (Redis) is unavailable; try again shortly"
BLOBS_UNAVAILABLE = "Blob storage is unavailable; try again shortly"
# A peer Cairn service's answers that mean it could not be reached or did not answer in time.
PEER_UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def peer_unavailable(service: str) -> Unavailable:
    return Unavailable(f"The {service} service is unavailable; try again shortly")


def as_unavailable(err: BaseException) -> Unavailable | None:
    """The 503 / UNAVAILABLE that a dependency outage escaping a handler means, else None.

    Dependencies are Redis, the blob store and the other Cairn services; a handler may map their
    failures itself (with a more specific message), and whatever it leaves is mapped here.
    """
    if redis_unavailable(err):
        return Unavailable(REDIS_UNAVAILABLE)
    if isinstance(err, BlobStoreUnavailable):
        return Unavailable(BLOBS_UNAVAILABLE)
    if isinstance(err, grpc.aio.AioRpcError) and err.code() in PEER_UNAVAILABLE_CODES:
        return Unavailable(f"A service this call needs is unavailable: {err.details()}")
    return None
