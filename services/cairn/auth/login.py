"""Login through a GitHub-compatible OAuth2 provider: access-token exchange, device and web flows.

Every flow ends the same way: the provider names a user, the user's account is found (or created
on first login, linked to `github:<user id>`), and a fresh token is issued for it. With no provider
configured, every flow answers 409 "Logins are disabled by configuration".
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from cairn.auth.service import IssuedToken, TokenService
from cairn.auth.settings import AuthSettings, OAuth2Provider
from cairn.auth.store import Account, AuthStore, Token
from cairn.runtime.errors import Conflict, Internal, InvalidRequest, Unauthenticated, quote
from cairn.runtime.timefmt import rfc3339, utc_now

LOGINS_DISABLED = "Logins are disabled by configuration"
LOGIN_FAILED = "Failed to login"
PROVIDER_FAILED = "External service call failed during login"
PROVIDERS = ("github",)
CALLBACK_PATH = "/v1/login/oauth2/web/callback/github"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


# RFC 6750's b64token: what an OAuth2 bearer token may consist of.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MAX_ACCESS_TOKEN_CHARS = 4096

@dataclass(frozen=True)
class ExternalUser:
    id: str
    login: str
    name: str
    email: str


@dataclass(frozen=True)
class DeviceCode:
    device_code: str
    user_code: str
    verification_uri: str
    expires_in: int
    interval: float


@dataclass(frozen=True)
class DeviceLogin:
    """Golem's OAuth2Data."""

    url: str
    user_code: str
    expires: str
    encoded_session: str

    def to_json(self) -> dict[str, str]:
        return {
            "url": self.url,
            "userCode": self.user_code,
            "expires": self.expires,
            "encodedSession": self.encoded_session,
        }


class GitHubClient:
    """The provider calls a login needs, over HTTP; any transport failure is a 500 to the client."""

    def __init__(self, provider: OAuth2Provider, timeout: float = 10.0) -> None:
        self._p = provider
        self._timeout = timeout

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                return await client.request(method, url, **kwargs)
        except httpx.HTTPError:
            raise Internal(PROVIDER_FAILED) from None

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise Internal(PROVIDER_FAILED) from None
        if not isinstance(data, dict):
            raise Internal(PROVIDER_FAILED)
        return data

    async def user(self, access_token: str) -> ExternalUser:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        response = await self._call("GET", f"{self._p.api_url}/user", headers=headers)
        if response.status_code in (401, 403):
            raise Unauthenticated(LOGIN_FAILED)
        if response.status_code != 200:
            raise Internal(PROVIDER_FAILED)
        data = self._json(response)
        if "id" not in data or "login" not in data:
            raise Internal(PROVIDER_FAILED)
        email = data.get("email") or await self._primary_email(headers)
        login = str(data["login"])
        return ExternalUser(str(data["id"]), login, str(data.get("name") or login), email)

    async def _primary_email(self, headers: dict[str, str]) -> str:
        response = await self._call("GET", f"{self._p.api_url}/user/emails", headers=headers)
        if response.status_code != 200:
            return ""
        try:
            emails = response.json()
        except ValueError:
            return ""
        if not isinstance(emails, list):
            return ""
        primary = [e for e in emails if isinstance(e, dict) and e.get("primary")]
        return str(primary[0].get("email", "")) if primary else ""

    async def start_device(self) -> DeviceCode:
        response = await self._call(
            "POST",
            f"{self._p.web_url}/login/device/code",
            data={"client_id": self._p.client_id, "scope": self._p.scope},
            headers={"Accept": "application/json"},
        )
        if response.status_code != 200:
            raise Internal(PROVIDER_FAILED)
        data = self._json(response)
        try:
            return DeviceCode(
                str(data["device_code"]),
                str(data["user_code"]),
                str(data["verification_uri"]),
                int(data["expires_in"]),
                float(data.get("interval", 5)),
            )
        except (KeyError, ValueError):
            raise Internal(PROVIDER_FAILED) from None

    async def poll_device(self, device_code: str) -> tuple[str | None, float]:
        """(access token, or None while pending; extra seconds to wait before the next poll)."""
        data = await self._access_token(
            {"client_id": self._p.client_id, "device_code": device_code, "grant_type": DEVICE_GRANT}
        )
        error = data.get("error")
        if error == "authorization_pending":
            return None, 0.0
        if error == "slow_down":
            return None, 5.0
        if error is not None or "access_token" not in data:
            raise Unauthenticated(LOGIN_FAILED)
        return str(data["access_token"]), 0.0

    async def exchange_code(self, code: str, redirect_uri: str) -> str:
        data = await self._access_token({
            "client_id": self._p.client_id,
            "client_secret": self._p.client_secret,
            "code": code,
            "redirect_uri": redirect_uri,
        })
        if "access_token" not in data:
            raise Unauthenticated(LOGIN_FAILED)
        return str(data["access_token"])

    async def _access_token(self, form: dict[str, str]) -> dict[str, Any]:
        response = await self._call(
            "POST",
            f"{self._p.web_url}/login/oauth/access_token",
            data=form,
            headers={"Accept": "application/json"},
        )
        if response.status_code >= 500:
            raise Internal(PROVIDER_FAILED)
        return self._json(response)

    def authorize_url(self, state: str, redirect_uri: str) -> str:
        query = urlencode({
            "client_id": self._p.client_id,
            "redirect_uri": redirect_uri,
            "scope": self._p.scope,
            "state": state,
        })
        return f"{self._p.web_url}/login/oauth/authorize?{query}"


@dataclass(frozen=True)
class WebPoll:
    """A web login's state: the token once the browser came back, else None (pending)."""

    token: IssuedToken | None


class LoginService:
    def __init__(self, store: AuthStore, tokens: TokenService, settings: AuthSettings) -> None:
        self._store = store
        self._tokens = tokens
        self._settings = settings
        self._github = GitHubClient(settings.oauth2) if settings.oauth2 else None

    def _enabled(self) -> tuple[GitHubClient, OAuth2Provider]:
        if self._github is None or self._settings.oauth2 is None:
            raise Conflict(LOGINS_DISABLED)
        return self._github, self._settings.oauth2

    @staticmethod
    def _provider(raw: str | None) -> None:
        if raw is None:
            raise InvalidRequest.for_field("provider", "Missing query parameter: provider")
        if raw.lower() not in PROVIDERS:
            expected = ", ".join(PROVIDERS)
            raise InvalidRequest.for_field(
                "provider", f"Invalid provider: {quote(raw)!r}; expected one of {expected}")

    async def _issue_for(self, user: ExternalUser) -> IssuedToken:
        candidate = Account(str(uuid.uuid4()), user.name, user.email, self._settings.plan.plan_id)
        account = await self._store.account_for_identity(f"github:{user.id}", candidate)
        expires = utc_now() + timedelta(seconds=self._settings.login_token_ttl_seconds)
        return await self._tokens.issue(account.id, rfc3339(expires))

    async def exchange_access_token(
        self, provider: str | None, access_token: str | None
    ) -> IssuedToken:
        self._provider(provider)
        if not access_token:
            raise InvalidRequest.for_field(
                "access-token", "Missing query parameter: access-token")
        if len(access_token) > MAX_ACCESS_TOKEN_CHARS or not _BEARER_TOKEN.fullmatch(access_token):
            # It goes into an HTTP header to the provider: only a bearer token's characters fit.
            raise InvalidRequest.for_field(
                "access-token", "Invalid query parameter access-token: not an OAuth2 bearer token")
        github, _ = self._enabled()
        return await self._issue_for(await github.user(access_token))

    async def start_device(self) -> DeviceLogin:
        github, _ = self._enabled()
        code = await github.start_device()
        ttl = min(code.expires_in, self._settings.login_session_ttl_seconds)
        session = secrets.token_urlsafe(32)
        record = {"device_code": code.device_code, "interval": code.interval,
                  "deadline": time.time() + ttl}
        await self._store.put_login("device", session, record, ttl)
        expires = rfc3339(utc_now() + timedelta(seconds=code.expires_in))
        return DeviceLogin(code.verification_uri, code.user_code, expires, session)

    async def complete_device(self, encoded_session: str) -> IssuedToken:
        github, _ = self._enabled()
        if not encoded_session:
            raise InvalidRequest("Missing body: the encodedSession JSON string")
        session = await self._store.take_login("device", encoded_session)
        if session is None:
            raise InvalidRequest("Invalid or expired login session")
        # Golem's complete waits for the user, polling at the provider's interval.
        deadline = float(session["deadline"])
        interval = float(session["interval"])
        while True:
            access_token, backoff = await github.poll_device(str(session["device_code"]))
            if access_token is not None:
                return await self._issue_for(await github.user(access_token))
            interval += backoff
            if time.time() + interval > deadline:
                raise Unauthenticated(f"{LOGIN_FAILED}: the device login expired")
            await asyncio.sleep(interval)

    async def authorize_web(self, provider: str | None, redirect: str | None) -> tuple[str, str]:
        """(the provider's authorization URL, the state to poll with)."""
        self._provider(provider)
        github, p = self._enabled()
        state = secrets.token_urlsafe(32)
        ttl = self._settings.login_session_ttl_seconds
        await self._store.put_login("web", state, {"redirect": redirect or "", "token": None}, ttl)
        return github.authorize_url(state, p.callback_base_url + CALLBACK_PATH), state

    async def web_callback(self, code: str | None, state: str | None) -> str:
        """Finishes a web login; returns the redirect URL given at authorize time ("" if none)."""
        problems = [f"Missing query parameter: {n}" for n, v in (("code", code), ("state", state))
                    if not v]
        if problems:
            raise InvalidRequest(*problems)
        assert code is not None and state is not None
        github, p = self._enabled()
        record = await self._store.login("web", state)
        if record is None or record.get("token") is not None:
            raise InvalidRequest("Invalid or expired login state")
        access_token = await github.exchange_code(code, p.callback_base_url + CALLBACK_PATH)
        issued = await self._issue_for(await github.user(access_token))
        done = {"redirect": record["redirect"], "token": issued.to_json()}
        await self._store.put_login("web", state, done, self._settings.login_session_ttl_seconds)
        return str(record["redirect"])

    async def poll_web(self, state: str | None) -> WebPoll:
        if not state:
            raise InvalidRequest.for_field("state", "Missing query parameter: state")
        self._enabled()
        record = await self._store.login("web", state)
        if record is None:
            raise InvalidRequest("Invalid or expired login state")
        if record.get("token") is None:
            return WebPoll(None)
        # The secret is handed out once: a second poll finds nothing.
        taken = await self._store.take_login("web", state)
        if taken is None or taken.get("token") is None:
            raise InvalidRequest("Invalid or expired login state")
        return WebPoll(issued_from_json(taken["token"]))


def issued_from_json(data: dict[str, Any]) -> IssuedToken:
    """The IssuedToken a finished web login kept for its poll (UnsafeToken JSON)."""
    token = data["data"]
    return IssuedToken(
        Token(token["id"], token["accountId"], token["createdAt"], token["expiresAt"]),
        str(data["secret"]["value"]),
    )
