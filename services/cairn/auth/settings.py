"""Auth service settings beyond the shared ones: the default plan and the OAuth2 login provider.

Read once, in `cairn.auth.__main__`, from `CAIRN_PLAN_*` and `CAIRN_OAUTH2_*` (documented in
docs/auth.md). The default plan's limits are Golem's default plan.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cairn.runtime.envvars import count

DEFAULT_PLAN_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Plan:
    """Golem's Plan: the limits every account on it gets. Byte limits are in bytes."""

    plan_id: str = DEFAULT_PLAN_ID
    project_limit: int = 100
    component_limit: int = 100
    worker_limit: int = 10_000
    storage_limit: int = 500_000_000
    monthly_gas_limit: int = 1_000_000_000_000
    monthly_upload_limit: int = 1_000_000_000
    # Golem's ResourceLimits.maxMemoryPerWorker (its servers answer 100 MiB).
    max_memory_per_worker: int = 100 * 1024 * 1024

    def to_json(self) -> dict[str, object]:
        """Golem's Plan JSON."""
        return {
            "planId": self.plan_id,
            "planData": {
                "projectLimit": self.project_limit,
                "componentLimit": self.component_limit,
                "workerLimit": self.worker_limit,
                "storageLimit": self.storage_limit,
                "monthlyGasLimit": self.monthly_gas_limit,
                "monthlyUploadLimit": self.monthly_upload_limit,
            },
        }


@dataclass(frozen=True)
class OAuth2Provider:
    """A GitHub-compatible OAuth2 provider (GitHub itself, or a local stand-in in tests)."""

    client_id: str
    client_secret: str
    # Where browsers and devices go: /login/oauth/authorize, /login/device/code, ...
    web_url: str = "https://github.com"
    # The REST API with GET /user and GET /user/emails.
    api_url: str = "https://api.github.com"
    # Our public base URL, for the web flow's redirect_uri (…/v1/login/oauth2/web/callback/github).
    callback_base_url: str = "http://127.0.0.1:8080"
    scope: str = "user:email"


@dataclass(frozen=True)
class AuthSettings:
    plan: Plan = Plan()
    # None: logins are disabled (the OAuth2 routes answer 409).
    oauth2: OAuth2Provider | None = None
    # Lifetime of tokens issued by a login.
    login_token_ttl_seconds: int = 30 * 24 * 3600
    # How long a device or web login may stay pending.
    login_session_ttl_seconds: int = 900
    # How long a verified token may be answered from memory (changes invalidate it at once,
    # see cairn.auth.token_cache); 0 reads Redis on every check.
    token_cache_seconds: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthSettings:
        env = os.environ if env is None else env
        defaults = Plan()
        plan = Plan(
            plan_id=env.get("CAIRN_PLAN_ID", "") or DEFAULT_PLAN_ID,
            project_limit=count(env, "CAIRN_PLAN_PROJECT_LIMIT", defaults.project_limit),
            component_limit=count(env, "CAIRN_PLAN_COMPONENT_LIMIT", defaults.component_limit),
            worker_limit=count(env, "CAIRN_PLAN_WORKER_LIMIT", defaults.worker_limit),
            storage_limit=count(env, "CAIRN_PLAN_STORAGE_LIMIT", defaults.storage_limit),
            monthly_gas_limit=count(
                env, "CAIRN_PLAN_MONTHLY_GAS_LIMIT", defaults.monthly_gas_limit
            ),
            monthly_upload_limit=count(
                env, "CAIRN_PLAN_MONTHLY_UPLOAD_LIMIT", defaults.monthly_upload_limit
            ),
            max_memory_per_worker=count(
                env, "CAIRN_PLAN_MAX_MEMORY_PER_WORKER", defaults.max_memory_per_worker
            ),
        )
        client_id = env.get("CAIRN_OAUTH2_CLIENT_ID", "")
        oauth2 = None
        if client_id:
            oauth2 = OAuth2Provider(
                client_id=client_id,
                client_secret=env.get("CAIRN_OAUTH2_CLIENT_SECRET", ""),
                web_url=(env.get("CAIRN_OAUTH2_WEB_URL", "") or "https://github.com").rstrip("/"),
                api_url=(env.get("CAIRN_OAUTH2_API_URL", "") or "https://api.github.com").rstrip(
                    "/"
                ),
                callback_base_url=(
                    env.get("CAIRN_OAUTH2_CALLBACK_BASE_URL", "")
                    or f"http://127.0.0.1:{env.get('CAIRN_HTTP_PORT', '') or '8080'}"
                ).rstrip("/"),
            )
        return cls(
            plan=plan,
            oauth2=oauth2,
            login_token_ttl_seconds=count(
                env, "CAIRN_LOGIN_TOKEN_TTL_SECONDS", cls.login_token_ttl_seconds
            ),
            login_session_ttl_seconds=count(
                env, "CAIRN_LOGIN_SESSION_TTL_SECONDS", cls.login_session_ttl_seconds
            ),
            token_cache_seconds=count(
                env, "CAIRN_AUTH_TOKEN_CACHE_SECONDS", cls.token_cache_seconds
            ),
        )
