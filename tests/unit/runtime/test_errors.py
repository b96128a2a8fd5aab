"""Error bodies as each API family documents them."""

import json

import grpc
import pytest

from cairn.runtime.errors import (
    AlreadyExists,
    ErrorStyle,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    Problems,
    ServiceError,
    Unauthenticated,
)


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (InvalidRequest("a", "b"), 400, {"errors": ["a", "b"]}),
        (Unauthenticated("Invalid Token: Unknown token secret."), 401,
         {"error": "Invalid Token: Unknown token secret."}),
        (PermissionDenied("Action `X` is not allowed"), 401,
         {"error": "Action `X` is not allowed"}),
        (NotFound("Project not found: p"), 404, {"error": "Project not found: p"}),
        (AlreadyExists("Component already exists: c"), 409,
         {"error": "Component already exists: c"}),
        (ServiceError(), 500, {"error": "Internal server error"}),
    ],
)
def test_golem_bodies(error: ServiceError, status: int, body: dict[str, object]) -> None:
    assert error.http_status == status
    assert json.loads(error.rest_body(ErrorStyle.GOLEM)) == body


def test_ledger_bodies_carry_status_and_error_list() -> None:
    body = NotFound("Contract not found").rest_body(ErrorStyle.LEDGER)
    assert json.loads(body) == {"status": 404, "errors": ["Contract not found"]}


def test_bodies_are_ascii_so_they_fit_in_grpc_metadata() -> None:
    body = InvalidRequest("naïve ☃").rest_body(ErrorStyle.GOLEM)
    assert body.isascii()
    assert json.loads(body) == {"errors": ["naïve ☃"]}


def test_permission_denied_is_401_over_rest_but_permission_denied_over_grpc() -> None:
    err = PermissionDenied("no")
    assert (err.http_status, err.grpc_code) == (401, grpc.StatusCode.PERMISSION_DENIED)


def test_every_error_class_has_a_stable_upper_snake_reason() -> None:
    from cairn.runtime import errors

    reasons = {cls.__name__: cls.reason for cls in [
        errors.ServiceError, errors.InvalidRequest, errors.Unauthenticated,
        errors.PermissionDenied, errors.LimitExceeded, errors.NotFound, errors.AlreadyExists,
        errors.Conflict, errors.Internal, errors.Unavailable]}
    assert reasons == {
        "ServiceError": "INTERNAL", "InvalidRequest": "INVALID_REQUEST",
        "Unauthenticated": "UNAUTHENTICATED", "PermissionDenied": "PERMISSION_DENIED",
        "LimitExceeded": "LIMIT_EXCEEDED", "NotFound": "NOT_FOUND",
        "AlreadyExists": "ALREADY_EXISTS", "Conflict": "CONFLICT", "Internal": "INTERNAL",
        "Unavailable": "UNAVAILABLE",
    }

    class ComponentVanished(NotFound):
        pass

    class Renamed(NotFound):
        reason = "GONE"

    assert (ComponentVanished.reason, Renamed.reason) == ("COMPONENT_VANISHED", "GONE")


def test_rpc_status_carries_error_info_field_violations_and_request_id() -> None:
    from google.rpc import error_details_pb2

    error = InvalidRequest.for_field("componentName", "componentName must not be empty")
    error.metadata["componentName"] = ""
    status = error.rpc_status("cairn.component", "req-1")
    assert (status.code, status.message) == (3, "componentName must not be empty")
    info, bad, request = (error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest(),
                          error_details_pb2.RequestInfo())
    assert [d.Unpack(m) for d, m in zip(status.details, (info, bad, request), strict=True)]
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "INVALID_REQUEST", "cairn.component", {"componentName": ""})
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("componentName", "componentName must not be empty")]
    assert request.request_id == "req-1"
    # The REST body is unchanged by the details.
    assert json.loads(error.rest_body(ErrorStyle.GOLEM)) == {
        "errors": ["componentName must not be empty"]}


def test_problems_name_each_field_and_keep_the_rest_body() -> None:
    from google.rpc import error_details_pb2

    problems = Problems()
    problems.raise_if_any()  # nothing wrong: nothing raised
    problems.add("name", "Missing field: name")
    problems.add("email", "Invalid email: 'x'")
    with pytest.raises(InvalidRequest) as raised:
        problems.raise_if_any()
    error = raised.value
    assert json.loads(error.rest_body(ErrorStyle.GOLEM)) == {
        "errors": ["Missing field: name", "Invalid email: 'x'"]}
    bad = error_details_pb2.BadRequest()
    assert error.rpc_status("cairn.auth").details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("name", "Missing field: name"), ("email", "Invalid email: 'x'")]
