"""Account and Token APIs end to end through Envoy: exact JSON, lifecycles, documented errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest

from cairn.auth.v1 import account_service_pb2 as account_pb
from cairn.auth.v1 import account_service_pb2_grpc as account_grpc
from cairn.auth.v1 import token_service_pb2 as token_pb
from cairn.auth.v1 import token_service_pb2_grpc as token_grpc

from .conftest import RunningStack, exact

pytestmark = pytest.mark.e2e
PLAN_ID = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def root(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.root_token}"}
    ) as client:
        yield client


def envoy_text(response: httpx.Response) -> str:
    """A body Envoy made itself (ext_authz denials): its json_format appends a newline."""
    return response.text.removesuffix("\n")


def as_bearer(stack: RunningStack, secret: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {secret}"})


def new_account(root: httpx.Client, name: str) -> tuple[str, str]:
    """An account made through the Account API and a token through the Token API."""
    made = root.post("/v1/accounts", json={"name": name, "email": f"{name}@example.com"})
    assert made.status_code == 200, made.text
    account_id = made.json()["id"]
    token = root.post(f"/v1/accounts/{account_id}/tokens", json={})
    assert token.status_code == 200, token.text
    return account_id, token.json()["secret"]["value"]


def test_admin_creates_accounts_with_the_default_plan(root: httpx.Client) -> None:
    made = root.post("/v1/accounts", json={"name": "Ann", "email": "ann@example.com"})
    assert made.status_code == 200
    account_id = made.json()["id"]
    uuid.UUID(account_id)
    assert made.text == exact(
        {"id": account_id, "name": "Ann", "email": "ann@example.com", "planId": PLAN_ID}
    )
    assert root.get(f"/v1/accounts/{account_id}").text == made.text
    plan = root.get(f"/v1/accounts/{account_id}/plan")
    assert plan.text == exact({
        "planId": PLAN_ID,
        "planData": {
            "projectLimit": 100, "componentLimit": 100, "workerLimit": 10000,
            "storageLimit": 500000000, "monthlyGasLimit": 1000000000000,
            "monthlyUploadLimit": 1000000000,
        },
    })


def test_account_validation_and_admin_only_create(
    stack: RunningStack, root: httpx.Client
) -> None:
    missing = root.post("/v1/accounts", json={"name": "x"})
    assert (missing.status_code, missing.text) == (400, exact({"errors": ["Missing field: email"]}))
    bad = root.post("/v1/accounts", json={"name": " ", "email": "nope"})
    assert bad.json() == {"errors": ["Account name must not be empty", "Invalid email: 'nope'"]}
    _, secret = new_account(root, "plain")
    with as_bearer(stack, secret) as plain:
        denied = plain.post("/v1/accounts", json={"name": "y", "email": "y@example.com"})
    assert (denied.status_code, denied.text) == (
        401, exact({"error": "Action is only allowed for [Admin]"})
    )


def test_update_accepts_both_shapes_and_refuses_plan_changes(
    stack: RunningStack, root: httpx.Client
) -> None:
    account_id, secret = new_account(root, "upd")
    with as_bearer(stack, secret) as me:
        updated = me.put(f"/v1/accounts/{account_id}",
                         json={"name": "Updated", "email": "new@example.com"})
        assert updated.text == exact({"id": account_id, "name": "Updated",
                                      "email": "new@example.com", "planId": PLAN_ID})
        # The 2023 docs sent the whole Account back.
        full = me.put(f"/v1/accounts/{account_id}", json={
            "id": account_id, "name": "Again", "email": "again@example.com", "planId": PLAN_ID,
        })
        assert full.status_code == 200 and full.json()["name"] == "Again"
        plan_change = me.put(f"/v1/accounts/{account_id}", json={
            "name": "x", "email": "x@example.com", "planId": str(uuid.uuid4()),
        })
        assert plan_change.json() == {
            "errors": ["Changing the plan of an account is not allowed"]
        }
        wrong_id = me.put(f"/v1/accounts/{account_id}", json={
            "id": "someone-else", "name": "x", "email": "x@example.com",
        })
        assert wrong_id.json() == {
            "errors": ["The account id in the body does not match the path"]
        }
    assert root.get(f"/v1/accounts/{account_id}").json()["name"] == "Again"


def test_token_lifecycle(stack: RunningStack, root: httpx.Client) -> None:
    account_id, first_secret = new_account(root, "tok")
    with as_bearer(stack, first_secret) as me:
        created = me.post(f"/v1/accounts/{account_id}/tokens",
                          json={"expiresAt": "2099-05-01T10:00:00Z"})
        assert created.status_code == 200, created.text
        body = created.json()
        token_id, secret = body["data"]["id"], body["secret"]["value"]
        uuid.UUID(token_id)
        uuid.UUID(secret)
        assert list(body) == ["data", "secret"]
        assert list(body["data"]) == ["id", "accountId", "createdAt", "expiresAt"]
        assert body["data"]["accountId"] == account_id
        assert body["data"]["expiresAt"] == "2099-05-01T10:00:00Z"
        token_json = exact(body["data"])
        # The secret is shown only at creation: get and list carry the Token alone.
        assert me.get(f"/v1/accounts/{account_id}/tokens/{token_id}").text == token_json
        listed = me.get(f"/v1/accounts/{account_id}/tokens").json()
        assert [t["id"] for t in listed][-1] == token_id and len(listed) == 2
        assert secret not in me.get(f"/v1/accounts/{account_id}/tokens").text
    with as_bearer(stack, secret) as second:
        assert second.get("/v1/login/token").text == token_json
        assert second.get(f"/v1/accounts/{account_id}").status_code == 200
    with as_bearer(stack, first_secret) as me:
        deleted = me.delete(f"/v1/accounts/{account_id}/tokens/{token_id}")
        assert (deleted.status_code, deleted.text) == (200, "{}")
        gone = me.get(f"/v1/accounts/{account_id}/tokens/{token_id}")
        assert (gone.status_code, gone.text) == (
            404, exact({"error": f"Unknown token: {token_id}"})
        )
    with as_bearer(stack, secret) as revoked:
        refused = revoked.get("/v1/projects")
    assert (refused.status_code, envoy_text(refused)) == (
        401, exact({"error": "Invalid Token: Unknown token secret."})
    )


def test_expired_tokens_and_bad_expiry(stack: RunningStack, root: httpx.Client) -> None:
    account_id, _ = new_account(root, "exp")
    past = root.post(f"/v1/accounts/{account_id}/tokens",
                     json={"expiresAt": "2020-01-01T00:00:00Z"})
    assert past.status_code == 200
    with as_bearer(stack, past.json()["secret"]["value"]) as expired:
        refused = expired.get(f"/v1/accounts/{account_id}")
    assert (refused.status_code, envoy_text(refused)) == (
        401, exact({"error": "Invalid Token: Expired auth token."})
    )
    bad = root.post(f"/v1/accounts/{account_id}/tokens", json={"expiresAt": "tomorrow"})
    assert (bad.status_code, bad.json()) == (
        400, {"errors": ["Invalid expiresAt: 'tomorrow' is not an RFC 3339 date-time"]}
    )
    unknown = root.get("/v1/accounts/no-such-account/tokens")
    assert (unknown.status_code, unknown.json()) == (
        400, {"errors": ["Account Not Found: no-such-account"]}
    )


def test_account_roles_make_admins(stack: RunningStack, root: httpx.Client) -> None:
    account_id, secret = new_account(root, "promoted")
    assert root.get(f"/v1/accounts/{account_id}/grants").text == "[]"
    with as_bearer(stack, secret) as me:
        denied = me.put(f"/v1/accounts/{account_id}/grants/Admin")
        assert (denied.status_code, denied.json()) == (
            401, {"error": "Action is only allowed for [Admin]"}
        )
        missing = me.get(f"/v1/accounts/{account_id}/grants/Admin")
        assert (missing.status_code, missing.json()) == (404, {"error": "Role not found: Admin"})
    granted = root.put(f"/v1/accounts/{account_id}/grants/Admin")
    assert (granted.status_code, granted.text) == (200, '"Admin"')
    assert root.get(f"/v1/accounts/{account_id}/grants").text == '["Admin"]'
    with as_bearer(stack, secret) as me:
        assert me.get(f"/v1/accounts/{account_id}/grants/Admin").text == '"Admin"'
        assert me.post("/v1/accounts", json={"name": "n", "email": "n@example.com"}
                       ).status_code == 200
    bad_role = root.put(f"/v1/accounts/{account_id}/grants/Wizard")
    assert bad_role.status_code == 400
    assert bad_role.json()["errors"][0].startswith("Invalid role: 'Wizard'")
    revoked = root.delete(f"/v1/accounts/{account_id}/grants/Admin")
    assert (revoked.status_code, revoked.text) == (200, "{}")
    with as_bearer(stack, secret) as me:
        assert me.post("/v1/accounts", json={"name": "n", "email": "n@example.com"}
                       ).status_code == 401


def test_deleting_an_account_revokes_its_tokens(stack: RunningStack, root: httpx.Client) -> None:
    account_id, secret = new_account(root, "leaver")
    with as_bearer(stack, secret) as me:
        assert me.delete(f"/v1/accounts/{account_id}").text == "{}"
        after = me.get(f"/v1/accounts/{account_id}")
    assert (after.status_code, after.json()) == (
        401, {"error": "Invalid Token: Unknown token secret."}
    )
    missing = root.get(f"/v1/accounts/{account_id}")
    assert (missing.status_code, missing.text) == (404, exact({"error": "Account not found"}))
    root_account = root.delete("/v1/accounts/root")
    assert root_account.json() == {"errors": ["Cannot delete the root account"]}


@pytest.mark.parametrize("via", ["envoy", "direct"])
def test_native_grpc_clients_use_the_same_bearer_token(
    stack: RunningStack, root: httpx.Client, via: str
) -> None:
    account_id, secret = new_account(root, f"grpc-{via}")
    target = stack.grpc_target if via == "envoy" else f"127.0.0.1:{stack.grpc_ports['auth']}"
    metadata = (("authorization", f"Bearer {secret}"),)
    with grpc.insecure_channel(target) as channel:
        accounts = account_grpc.AccountServiceStub(channel)
        reply = accounts.GetAccount(account_pb.GetAccountRequest(account_id=account_id),
                                    metadata=metadata)
        assert (reply.account.id, reply.account.name, reply.account.plan_id) == (
            account_id, f"grpc-{via}", PLAN_ID
        )
        assert not reply.rest.data
        tokens = token_grpc.TokenServiceStub(channel)
        made = tokens.CreateToken(token_pb.CreateTokenRequest(account_id=account_id),
                                  metadata=metadata)
        assert made.token.data.expires_at == "2100-01-01T00:00:00Z"
        uuid.UUID(made.token.secret)
        with pytest.raises(grpc.RpcError) as err:
            accounts.GetAccount(account_pb.GetAccountRequest(account_id="root"),
                                metadata=metadata)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == "Access to account `root` is not allowed"
        # A forged principal header gets nothing, directly or through Envoy.
        forged = (("x-cairn-principal", "eyJzdWIiOiJyb290In0.forged"),)
        with pytest.raises(grpc.RpcError) as err:
            accounts.GetAccount(account_pb.GetAccountRequest(account_id="root"), metadata=forged)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_session_cookie_is_the_other_security_scheme(
    stack: RunningStack, root: httpx.Client
) -> None:
    account_id, secret = new_account(root, "cookie")
    reply = httpx.get(f"{stack.base_url}/v1/accounts/{account_id}",
                      headers={"Cookie": f"theme=dark; GOLEM_SESSION={secret}"})
    assert reply.status_code == 200 and reply.json()["id"] == account_id
    unknown = httpx.get(f"{stack.base_url}/v1/accounts/{account_id}",
                        headers={"Cookie": f"GOLEM_SESSION={uuid.uuid4()}"})
    assert (unknown.status_code, envoy_text(unknown)) == (
        401, exact({"error": "Invalid Token: Unknown token secret."})
    )
