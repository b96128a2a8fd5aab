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
