"""Login API end to end: a stack configured with a local GitHub-compatible OAuth2 provider.

There is no internet here, so `FakeGitHub` plays GitHub on 127.0.0.1: the REST API (`/user`,
`/user/emails`) and the OAuth endpoints (device code, access token, authorize). The stack is a
second, module-scoped one (the session stack runs with logins disabled) started the way
`make run` starts it, with the `CAIRN_OAUTH2_*` settings pointing at the fake provider.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from cairn.stack.launcher import Stack, free_port

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e

CLIENT_ID = "cairn-test-client"
CLIENT_SECRET = "cairn-test-secret"


@dataclass
class FakeUser:
    id: int
    login: str
    name: str | None
    email: str | None
    emails: list[dict[str, object]] = field(default_factory=list)


@dataclass
class FakeGitHub:
    """State of the fake provider; the handler below serves it."""

    users: dict[str, FakeUser] = field(default_factory=dict)  # access token -> user
    device_codes: dict[str, dict[str, object]] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)  # authorization code -> access token
    # The user the next device or web authorization is for.
    approving: str = ""
    pending_polls: int = 2
    requests: list[str] = field(default_factory=list)
    base_url: str = ""

    def add_user(self, user: FakeUser) -> str:
        token = f"gho_{uuid.uuid4().hex}"
        self.users[token] = user
        return token


def _handler(state: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _reply(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _user(self) -> FakeUser | None:
            auth = self.headers.get("Authorization", "")
            return state.users.get(auth.removeprefix("Bearer ").removeprefix("token "))

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            parsed = parse_qs(self.rfile.read(length).decode())
            return {k: v[0] for k, v in parsed.items()}

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            state.requests.append(f"GET {url.path}")
            if url.path == "/user":
                user = self._user()
                if user is None:
                    self._reply(401, {"message": "Bad credentials"})
                    return
                self._reply(200, {"id": user.id, "login": user.login, "name": user.name,
                                  "email": user.email})
            elif url.path == "/user/emails":
                user = self._user()
                self._reply(200 if user else 401, user.emails if user else {})
            elif url.path == "/login/oauth/authorize":
                # The user approves at once: back to the redirect_uri with a code.
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                assert query["client_id"] == CLIENT_ID
                code = uuid.uuid4().hex
                state.codes[code] = state.approving
                back = urlencode({"code": code, "state": query["state"]})
                target = f"{query['redirect_uri']}?{back}"
                self._reply(302, {}, {"Location": target})
            else:
                self._reply(404, {"message": "Not Found"})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            state.requests.append(f"POST {url.path}")
            form = self._form()
            if url.path == "/login/device/code":
                assert form["client_id"] == CLIENT_ID
                device_code = uuid.uuid4().hex
                state.device_codes[device_code] = {"polls": 0, "token": state.approving}
                self._reply(200, {
                    "device_code": device_code, "user_code": "WDJB-MJHT",
                    "verification_uri": f"{state.base_url}/login/device",
                    "expires_in": 30, "interval": 0.1,
                })
            elif url.path == "/login/oauth/access_token":
                if "device_code" in form:
                    entry = state.device_codes.get(form["device_code"])
                    if entry is None:
                        self._reply(200, {"error": "expired_token"})
                        return
                    entry["polls"] = int(str(entry["polls"])) + 1
                    if int(str(entry["polls"])) <= state.pending_polls:
                        self._reply(200, {"error": "authorization_pending"})
                        return
                    self._reply(200, {"access_token": entry["token"], "token_type": "bearer"})
                    return
                assert form.get("client_secret") == CLIENT_SECRET
                token = state.codes.pop(form.get("code", ""), None)
                if token is None:
                    self._reply(200, {"error": "bad_verification_code"})
                    return
                self._reply(200, {"access_token": token, "token_type": "bearer"})
            else:
                self._reply(404, {"message": "Not Found"})

    return Handler


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    state = FakeGitHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def login_stack(
    github: FakeGitHub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    run_dir: Path = tmp_path_factory.mktemp("login-stack")
    http_port = free_port()
    ports = {name: free_port() for name in ("project", "component", "auth", "ledger")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")},
        "CAIRN_HTTP_PORT": str(http_port),
        "CAIRN_ENVOY_ADMIN_PORT": str(free_port()),
        **{f"CAIRN_{n.upper()}_GRPC_PORT": str(p) for n, p in ports.items()},
        "CAIRN_OAUTH2_CLIENT_ID": CLIENT_ID,
        "CAIRN_OAUTH2_CLIENT_SECRET": CLIENT_SECRET,
        "CAIRN_OAUTH2_WEB_URL": github.base_url,
        "CAIRN_OAUTH2_API_URL": github.base_url,
        "CAIRN_LOGIN_TOKEN_TTL_SECONDS": "3600",
        "CAIRN_LOG_LEVEL": "warning",
    }
    stack = Stack.prepare(env, run_dir, log_dir=run_dir / "logs").start()
    try:
        yield RunningStack(
            process=stack.children[0].process,
            base_url=stack.rest_url,
            grpc_target=f"127.0.0.1:{http_port}",
            root_token=stack.root_token,
            redis_url=stack.settings.redis_url,
            run_dir=run_dir,
            grpc_ports=ports,
        )
    finally:
        stack.stop()


def assert_token_json(body: dict[str, object], account_id: str | None = None) -> str:
    """Checks an UnsafeToken body's shape; returns its secret."""
    assert set(body) == {"data", "secret"}
    data = body["data"]
    assert isinstance(data, dict) and set(data) == {"id", "accountId", "createdAt", "expiresAt"}
    if account_id is not None:
        assert data["accountId"] == account_id
    secret = body["secret"]
    assert isinstance(secret, dict) and set(secret) == {"value"}
    uuid.UUID(str(secret["value"]))
    return str(secret["value"])


def me(base_url: str, secret: str) -> httpx.Response:
    return httpx.get(f"{base_url}/v1/login/token", headers={"Authorization": f"Bearer {secret}"})


def test_access_token_exchange_creates_the_account_once_and_issues_working_tokens(
    login_stack: RunningStack, github: FakeGitHub
) -> None:
    access = github.add_user(FakeUser(1001, "octocat", "The Octocat", "octo@example.com"))
    url = f"{login_stack.base_url}/v1/oauth2"
    first = httpx.post(url, params={"provider": "github", "access-token": access})
    assert first.status_code == 200, first.text
    secret = assert_token_json(first.json())
    account_id = first.json()["data"]["accountId"]
    # The new token works, and GET /v1/login/token tells which token it is.
    current = me(login_stack.base_url, secret)
    assert current.status_code == 200
    assert current.text == exact(first.json()["data"])
    account = httpx.get(f"{login_stack.base_url}/v1/accounts/{account_id}",
                        headers={"Authorization": f"Bearer {secret}"})
    assert account.json() == {"id": account_id, "name": "The Octocat",
                              "email": "octo@example.com",
                              "planId": "00000000-0000-0000-0000-000000000000"}
    # A second login of the same provider user lands in the same account, with a new token;
    # the 2023 docs' `access_token` spelling works too.
    second = httpx.post(url, params={"provider": "github", "access_token": access})
    assert second.json()["data"]["accountId"] == account_id
    assert second.json()["secret"]["value"] != secret


def test_access_token_exchange_errors(login_stack: RunningStack) -> None:
    url = f"{login_stack.base_url}/v1/oauth2"
    bad = httpx.post(url, params={"provider": "github", "access-token": "gho_unknown"})
    assert (bad.status_code, bad.text) == (401, exact({"error": "Failed to login"}))
    gitlab = httpx.post(url, params={"provider": "gitlab", "access-token": "x"})
    assert gitlab.status_code == 400
    assert gitlab.json() == {"errors": ["Invalid provider: 'gitlab'; expected one of github"]}
    missing = httpx.post(url, params={"provider": "github"})
    assert missing.json() == {"errors": ["Missing query parameter: access-token"]}
    # The token goes into a header to the provider: characters a header cannot carry used to be
    # a 500 (UnicodeEncodeError); now they are the client's 400.
    for hostile in ("\u00e9", "gho_\u4e2d", "x\r\nX-Injected: 1", "t" * 5000):
        reply = httpx.post(url, params={"provider": "github", "access-token": hostile})
        assert (reply.status_code, reply.json()) == (400, {"errors": [
            "Invalid query parameter access-token: not an OAuth2 bearer token"]}), hostile


def test_user_without_public_email_gets_the_primary_one(
    login_stack: RunningStack, github: FakeGitHub
) -> None:
    access = github.add_user(FakeUser(
        1002, "private-person", None, None,
        emails=[{"email": "other@example.com", "primary": False},
                {"email": "main@example.com", "primary": True}],
    ))
    reply = httpx.post(f"{login_stack.base_url}/v1/oauth2",
                       params={"provider": "github", "access-token": access})
    secret = assert_token_json(reply.json())
    account_id = reply.json()["data"]["accountId"]
    account = httpx.get(f"{login_stack.base_url}/v1/accounts/{account_id}",
                        headers={"Authorization": f"Bearer {secret}"}).json()
    assert (account["name"], account["email"]) == ("private-person", "main@example.com")


def test_device_flow_waits_for_the_user_and_redeems_once(
    login_stack: RunningStack, github: FakeGitHub
) -> None:
    github.approving = github.add_user(FakeUser(1003, "device-user", "Dev", "dev@example.com"))
    started = httpx.post(f"{login_stack.base_url}/login/oauth2/device/start")
    legacy = httpx.post(f"{login_stack.base_url}/oauth2/device/start")
    assert legacy.status_code == 200 and legacy.json()["userCode"] == "WDJB-MJHT"
    assert started.status_code == 200, started.text
    data = started.json()
    assert list(data) == ["url", "userCode", "expires", "encodedSession"]
    assert data["url"] == f"{github.base_url}/login/device"
    assert data["userCode"] == "WDJB-MJHT"
    complete_url = f"{login_stack.base_url}/login/oauth2/device/complete"
    done = httpx.post(complete_url, content=json.dumps(data["encodedSession"]),
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert done.status_code == 200, done.text
    secret = assert_token_json(done.json())
    assert me(login_stack.base_url, secret).status_code == 200
    again = httpx.post(complete_url, content=json.dumps(data["encodedSession"]),
                       headers={"Content-Type": "application/json"})
    assert (again.status_code, again.json()) == (
        400, {"errors": ["Invalid or expired login session"]}
    )
    not_a_string = httpx.post(complete_url, content=b'{"session": 1}',
                              headers={"Content-Type": "application/json"})
    assert not_a_string.json() == {
        "errors": ["Invalid body: expected the encodedSession as a JSON string"]
    }


def test_web_flow_redirects_back_and_the_poll_hands_out_the_token_once(
    login_stack: RunningStack, github: FakeGitHub
) -> None:
    github.approving = github.add_user(FakeUser(1004, "web-user", "Web", "web@example.com"))
    base = login_stack.base_url
    authorize = httpx.get(f"{base}/v1/login/oauth2/web/authorize",
                          params={"provider": "github", "redirect": "https://app.example/done"})
    assert authorize.status_code == 200, authorize.text
    body = authorize.json()
    assert list(body) == ["url", "state"]
    query = parse_qs(urlsplit(body["url"]).query)
    assert body["url"].startswith(f"{github.base_url}/login/oauth/authorize?")
    assert query["state"] == [body["state"]] and query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"][0].endswith("/v1/login/oauth2/web/callback/github")
    pending = httpx.get(f"{base}/v1/login/oauth2/web/poll", params={"state": body["state"]})
    assert (pending.status_code, pending.text) == (202, "{}")
    # The "browser": the provider approves and sends it to our callback (through Envoy).
    at_provider = httpx.get(body["url"])
    assert at_provider.status_code == 302
    callback = urlsplit(at_provider.headers["location"])
    back = httpx.get(f"{base}{callback.path}?{callback.query}")
    assert back.status_code == 302, back.text
    assert back.headers["location"] == "https://app.example/done"
    polled = httpx.get(f"{base}/v1/login/oauth2/web/poll", params={"state": body["state"]})
    assert polled.status_code == 200, polled.text
    secret = assert_token_json(polled.json())
    assert me(base, secret).status_code == 200
    gone = httpx.get(f"{base}/v1/login/oauth2/web/poll", params={"state": body["state"]})
    assert (gone.status_code, gone.json()) == (400, {"errors": ["Invalid or expired login state"]})


def test_web_flow_without_redirect_answers_200_empty(
    login_stack: RunningStack, github: FakeGitHub
) -> None:
    github.approving = github.add_user(FakeUser(1005, "web-user-2", "Web2", "web2@example.com"))
    base = login_stack.base_url
    state = httpx.get(f"{base}/v1/login/oauth2/web/authorize",
                      params={"provider": "github"}).json()
    callback = urlsplit(httpx.get(state["url"]).headers["location"])
    back = httpx.get(f"{base}{callback.path}?{callback.query}")
    assert (back.status_code, back.text) == (200, "{}")
    bad_state = httpx.get(f"{base}/v1/login/oauth2/web/callback/github",
                          params={"code": "x", "state": "nope"})
    assert bad_state.json() == {"errors": ["Invalid or expired login state"]}


def test_login_routes_ignore_client_identity_headers(
    login_stack: RunningStack, github: FakeGitHub
) -> None:
    """Public routes need no token, and a forged principal or a bad token changes nothing."""
    access = github.add_user(FakeUser(1006, "forger", "F", "f@example.com"))
    reply = httpx.post(
        f"{login_stack.base_url}/v1/oauth2",
        params={"provider": "github", "access-token": access},
        headers={"Authorization": "Bearer not-a-uuid", "x-cairn-principal": "forged.value"},
    )
    assert reply.status_code == 200, reply.text


def test_logins_disabled_without_a_provider(stack: RunningStack) -> None:
    disabled = exact({"error": "Logins are disabled by configuration"})
    base = stack.base_url
    calls = [
        httpx.post(f"{base}/v1/oauth2", params={"provider": "github", "access-token": "t"}),
        httpx.post(f"{base}/login/oauth2/device/start"),
        httpx.post(f"{base}/login/oauth2/device/complete", content=b'"session"',
                   headers={"Content-Type": "application/json"}),
        httpx.get(f"{base}/v1/login/oauth2/web/authorize", params={"provider": "github"}),
        httpx.get(f"{base}/v1/login/oauth2/web/callback/github",
                  params={"code": "c", "state": "s"}),
        httpx.get(f"{base}/v1/login/oauth2/web/poll", params={"state": "s"}),
    ]
    for call in calls:
        assert (call.status_code, call.text) == (409, disabled), call.request.url
    # GET /v1/login/token is not a bootstrap route: it needs a token.
    assert httpx.get(f"{base}/v1/login/token").status_code == 401
