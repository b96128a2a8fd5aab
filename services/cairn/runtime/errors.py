"""The one error model: domain errors, their gRPC codes, and the exact REST bodies clients see.

Handlers raise `ServiceError` subclasses; the server interceptor (runtime.server) turns them into
- for native gRPC clients, the standard rich status: a `google.rpc.Status` (in the
  `grpc-status-details-bin` trailer) with an `ErrorInfo` whose `reason` is stable (UPPER_SNAKE, the
  class name unless the class says otherwise), `BadRequest` field violations where the error names
  fields, and `RequestInfo` with the request id;
- for REST calls (marked by Envoy), `x-http-status`/`x-http-body` trailing metadata, which Envoy's
  Lua shaper (envoy/rest_shaper.lua) turns into the documented HTTP status and JSON body.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from cairn.runtime.redis import is_unavailable as redis_unavailable

# A lone UTF-16 surrogate: not a Unicode scalar value, so not encodable as UTF-8.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# The longest error message sent: grpc-message and x-http-body travel as HTTP/2 headers, and an
# over-long header list makes Envoy reset the stream (502/503) instead of passing the error on.
MAX_MESSAGE_CHARS = 1000
# How much of a client's input an error message quotes.
QUOTE_CHARS = 64


def safe_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` fit for a message: lone surrogates replaced (U+FFFD), at most `limit` chars."""
    text = LONE_SURROGATE.sub("\ufffd", text)
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


@dataclass(frozen=True)
class FieldViolation:
    """A request field (its path as the client wrote it, e.g. `componentName`) and what is wrong."""

    field: str
    description: str


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


class ServiceError(Exception):
    """A failure the client caused or must know about; carries its HTTP and gRPC status.

    `reason` is part of the API: native gRPC clients branch on it (ErrorInfo.reason), so a class's
    reason never changes. `metadata` names the values in the message (lowerCamel keys).
    """

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "reason" not in cls.__dict__:
            cls.reason = _upper_snake(cls.__name__)

    def __init__(
        self,
        *messages: str,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
    ) -> None:
        safe = tuple(safe_text(m) for m in messages)
        super().__init__(*safe)
        self.messages: tuple[str, ...] = safe or ("Internal server error",)
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = tuple(field_violations)

    @property
    def message(self) -> str:
        return safe_text("; ".join(self.messages))

    def rpc_status(self, domain: str, request_id: str = "") -> status_pb2.Status:
        """The google.rpc.Status native gRPC clients receive (grpcio-status sends it)."""
        details = [error_details_pb2.ErrorInfo(
            reason=self.reason, domain=domain, metadata=self.metadata)]
        if self.field_violations:
            details.append(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description)
                for v in self.field_violations
            ]))
        if request_id:
            details.append(error_details_pb2.RequestInfo(request_id=request_id))
        packed = []
        for detail in details:
            wrapper = any_pb2.Any()
            wrapper.Pack(detail)
            packed.append(wrapper)
        return status_pb2.Status(code=self.grpc_code.value[0], message=self.message,
                                 details=packed)

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

    @classmethod
    def for_field(cls, field: str, message: str) -> InvalidRequest:
        """One bad field: `message` is the REST text, the field also goes in BadRequest."""
        return cls(message, field_violations=[FieldViolation(field, message)])

    @classmethod
    def for_fields(cls, violations: Sequence[FieldViolation]) -> InvalidRequest:
        """Several bad fields: each description is one REST error text, in order."""
        return cls(*(v.description for v in violations), field_violations=violations)


class Problems:
    """What is wrong with a request's fields, collected so that one answer names them all."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, message: str) -> None:
        """`field` as the client wrote it (`componentName`, `specs.componentId`)."""
        self.violations.append(FieldViolation(field, message))

    def __bool__(self) -> bool:
        return bool(self.violations)

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidRequest.for_fields(self.violations)


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


class PayloadTooLarge(ServiceError):
    """A request (body, upload, archive) over a size limit of the service itself."""

    http_status = 413
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


class DependencyDown(Exception):
    """Base of an adapter's "my backend cannot serve" error (e.g. the blob store's): whatever a
    handler leaves of it is answered 503 / UNAVAILABLE with `public_message`."""

    public_message = "A service this call needs is unavailable; try again shortly"
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
    if isinstance(err, DependencyDown):
        return Unavailable(err.public_message)
    if isinstance(err, grpc.aio.AioRpcError) and err.code() in PEER_UNAVAILABLE_CODES:
        return Unavailable(f"A service this call needs is unavailable: {err.details()}")
    return None
