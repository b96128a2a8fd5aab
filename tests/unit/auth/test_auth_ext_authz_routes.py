"""ext_authz routing: login bootstrap paths are public, internal methods never pass, the rest
takes Golem tokens; client-sent identity headers are always dropped."""

from __future__ import annotations

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from cairn.auth import ext_authz as ext_authz_module
from cairn.auth.ext_authz import (
    ALLOWED_REUSE_SECONDS,
    IDENTITY_HEADERS,
    INTERNAL_PATHS,
    LOGIN_BOOTSTRAP_PATHS,
    Allow,
    Deny,
    ExtAuthzApi,
    HttpRequest,
    InternalOnlyAuthorizer,
    PublicAuthorizer,
    exact_paths,
    path_only,
)
from cairn.runtime.principal import ASSERTION_TTL_SECONDS, PRINCIPAL_HEADER, Principal, verify


class Refuse:
    async def check(self, request: HttpRequest) -> Allow | Deny:
        return Deny(401, "Unauthorized")


def api() -> ExtAuthzApi:
    return ExtAuthzApi(Refuse(), "secret", routes=[
        (exact_paths(*LOGIN_BOOTSTRAP_PATHS), PublicAuthorizer()),
        (exact_paths(*INTERNAL_PATHS), InternalOnlyAuthorizer()),
    ])


def test_path_only_drops_the_query() -> None:
    assert path_only("/v1/oauth2?provider=github&access-token=x") == "/v1/oauth2"
    assert path_only("/v1/projects") == "/v1/projects"


@pytest.mark.parametrize("path", [
    "/v1/oauth2?provider=github&access-token=t",
    "/login/oauth2/device/start",
    "/login/oauth2/device/complete",
    "/oauth2/device/start",
    "/v1/login/oauth2/web/authorize?provider=github",
    "/v1/login/oauth2/web/callback/github?code=c&state=s",
    "/v1/login/oauth2/web/poll?state=s",
    "/cairn.auth.v1.LoginService/StartDeviceLogin",
])
async def test_login_bootstrap_routes_are_public_and_drop_identity(path: str) -> None:
    authorizer = api().authorizer_for(path)
    decision = await authorizer.check(HttpRequest("GET", path, {"authorization": "Bearer x"}))
    assert isinstance(decision, Allow) and decision.principal is None
    assert set(decision.remove) == set(IDENTITY_HEADERS)
    assert {"authorization", "cookie", "x-cairn-principal"} <= set(decision.remove)


@pytest.mark.parametrize("path", [
    "/v1/login/token",
    "/v1/oauth2/extra",
    "/v1/projects",
    "/cairn.auth.v1.LoginService/CurrentToken",
    "/v1/login/oauth2/web/callback/gitlab",
])
async def test_everything_else_takes_the_default(path: str) -> None:
    decision = await api().authorizer_for(path).check(HttpRequest("GET", path, {}))
    assert decision == Deny(401, "Unauthorized")


@pytest.mark.parametrize("path", INTERNAL_PATHS)
async def test_internal_methods_are_refused_whatever_the_credentials(path: str) -> None:
    decision = await api().authorizer_for(path).check(
        HttpRequest("POST", path, {"authorization": "Bearer admin"})
    )
    assert isinstance(decision, Deny) and decision.http_status == 403


class AllowAlice:
    def __init__(self) -> None:
        self.checks = 0

    async def check(self, request: HttpRequest) -> Allow | Deny:
        self.checks += 1
        return Allow(Principal("alice", "tok-1", ("Admin",)))


def _check_request(path: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.path = path
    request.attributes.request.http.headers["authorization"] = "Bearer x"
    return request


def _asserted(response: external_auth_pb2.CheckResponse) -> str:
    (value,) = [h.header.value for h in response.ok_response.headers
                if h.header.key == PRINCIPAL_HEADER]
    return value


async def test_allowing_answer_is_reused_per_principal_and_signed_afresh_after_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    authorizer = AllowAlice()
    ext_authz = ExtAuthzApi(authorizer, "secret")
    clock = [1000.0]
    monkeypatch.setattr(ext_authz_module.time, "time", lambda: clock[0])
    first = await ext_authz.Check(_check_request("/v1/projects/default"), None)
    again = await ext_authz.Check(_check_request("/v1/projects"), None)
    assert authorizer.checks == 2  # every request is still authenticated
    assert _asserted(again) == _asserted(first)
    assert list(again.ok_response.headers_to_remove) == ["authorization"]
    clock[0] += ALLOWED_REUSE_SECONDS
    later = await ext_authz.Check(_check_request("/v1/projects/default"), None)
    assert _asserted(later) != _asserted(first)
    assert verify(_asserted(later), "secret", now=clock[0] + ASSERTION_TTL_SECONDS - 1) == \
        Principal("alice", "tok-1", ("Admin",))
