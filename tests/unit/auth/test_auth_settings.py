"""Auth settings from the environment: Golem's default plan, overrides, the OAuth2 provider."""

from __future__ import annotations

import pytest

from cairn.auth.settings import DEFAULT_PLAN_ID, AuthSettings, Plan


def test_defaults_are_golems_default_plan_and_no_logins() -> None:
    settings = AuthSettings.from_env({})
    assert settings.plan == Plan()
    assert (settings.plan.project_limit, settings.plan.component_limit) == (100, 100)
    assert settings.plan.storage_limit == 500_000_000
    assert settings.plan.monthly_upload_limit == 1_000_000_000
    assert settings.plan.plan_id == DEFAULT_PLAN_ID
    assert settings.oauth2 is None


def test_plan_json_is_golems_plan_shape() -> None:
    assert Plan().to_json() == {
        "planId": DEFAULT_PLAN_ID,
        "planData": {
            "projectLimit": 100, "componentLimit": 100, "workerLimit": 10000,
            "storageLimit": 500000000, "monthlyGasLimit": 1000000000000,
            "monthlyUploadLimit": 1000000000,
        },
    }


def test_overrides_and_provider() -> None:
    settings = AuthSettings.from_env({
        "CAIRN_PLAN_PROJECT_LIMIT": "3",
        "CAIRN_PLAN_STORAGE_LIMIT": "1000",
        "CAIRN_OAUTH2_CLIENT_ID": "id",
        "CAIRN_OAUTH2_CLIENT_SECRET": "secret",
        "CAIRN_OAUTH2_WEB_URL": "http://127.0.0.1:9999/",
        "CAIRN_HTTP_PORT": "8181",
    })
    assert (settings.plan.project_limit, settings.plan.storage_limit) == (3, 1000)
    assert settings.plan.component_limit == 100
    assert settings.oauth2 is not None
    assert settings.oauth2.web_url == "http://127.0.0.1:9999"
    assert settings.oauth2.api_url == "https://api.github.com"
    assert settings.oauth2.callback_base_url == "http://127.0.0.1:8181"


@pytest.mark.parametrize("value, message", [
    ("many", "CAIRN_PLAN_COMPONENT_LIMIT must be an integer, got 'many'"),
    ("-1", "CAIRN_PLAN_COMPONENT_LIMIT must not be negative, got -1"),
])
def test_bad_numbers_name_the_variable(value: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        AuthSettings.from_env({"CAIRN_PLAN_COMPONENT_LIMIT": value})
    assert str(err.value) == message
