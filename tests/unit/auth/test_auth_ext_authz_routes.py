"""ext_authz routing: login bootstrap paths are public, internal methods never pass, the rest
takes Golem tokens; client-sent identity headers are always dropped."""

from __future__ import annotations

import pytest

from cairn.auth.ext_authz import (
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
