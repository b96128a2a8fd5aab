"""gRPC surface of the auth service: proto <-> domain, and Golem's JSON for REST callers.

`AuthApi` is internal (other services); `AccountApi`, `TokenApi` and `LoginApi` are the Golem
Account, Token and Login APIs (Envoy's ext_authz is in `ext_authz`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from cairn.auth.callers import LocalCallers
from cairn.auth.login import LoginService
from cairn.auth.service import (
    AccountService,
    AccountSummaryService,
    Authenticator,
    IssuedToken,
    ResourceLimitsService,
    TokenService,
    UsageService,
)
from cairn.auth.settings import Plan
from cairn.auth.store import Account, Token
from cairn.auth.v1 import account_service_pb2 as account_pb
from cairn.auth.v1 import account_service_pb2_grpc as account_grpc
from cairn.auth.v1 import auth_service_pb2 as auth_pb
from cairn.auth.v1 import auth_service_pb2_grpc as auth_grpc
from cairn.auth.v1 import login_service_pb2 as login_pb
from cairn.auth.v1 import login_service_pb2_grpc as login_grpc
from cairn.auth.v1 import token_service_pb2 as token_pb
from cairn.auth.v1 import token_service_pb2_grpc as token_grpc
from cairn.runtime import jsonbody
from cairn.runtime.errors import InvalidRequest, Unavailable
from cairn.runtime.rest import is_rest, json_body

Context = grpc.aio.ServicerContext[Any, Any]
# Lets the Lua shaper give a successful REST reply a status other than 200 (202, 302).
HTTP_STATUS_HEADER = "x-http-status"


def plan_to_pb(plan: Plan) -> auth_pb.PlanLimits:
    return auth_pb.PlanLimits(
        plan_id=plan.plan_id,
        project_limit=plan.project_limit,
        component_limit=plan.component_limit,
        worker_limit=plan.worker_limit,
        storage_limit=plan.storage_limit,
        monthly_gas_limit=plan.monthly_gas_limit,
        monthly_upload_limit=plan.monthly_upload_limit,
    )


def account_to_pb(a: Account) -> account_pb.Account:
    return account_pb.Account(id=a.id, name=a.name, email=a.email, plan_id=a.plan_id)


def token_to_pb(t: Token) -> token_pb.Token:
    return token_pb.Token(
        id=t.id, account_id=t.account_id, created_at=t.created_at, expires_at=t.expires_at
    )


def unsafe_to_pb(issued: IssuedToken) -> token_pb.UnsafeToken:
    return token_pb.UnsafeToken(data=token_to_pb(issued.token), secret=issued.secret)


def _opt(message: Any, name: str) -> str | None:
    return getattr(message, name) if message.HasField(name) else None


@dataclass(frozen=True)
class InternalServices:
    """What AuthApi's service-only methods need."""

    accounts: AccountService
    usage: UsageService


class AuthApi(auth_grpc.AuthServiceServicer):
    """Service-to-service only: every method requires a signed service (or Envoy) assertion.

    Unguarded, Authenticate would tell anyone who reaches the auth port whether a token secret
    is valid (an oracle for guessing); through Envoy a caller gets here only after ext_authz
    authenticated its own token.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        callers: LocalCallers,
        internal: InternalServices | None = None,
    ) -> None:
        """`internal` None: only Authenticate is served (an ext_authz-only deployment)."""
        self._authn = authenticator
        self._callers = callers
        self._internal = internal

    def _services(self, context: Context) -> InternalServices:
        if self._internal is None:
            raise Unavailable("This auth server does not serve account lookups or usage")
        self._callers.require_service(context)
        return self._internal

    async def Authenticate(
        self, request: auth_pb.AuthenticateRequest, context: Context
    ) -> auth_pb.AuthenticateResponse:
        self._callers.require_service(context)
        p = await self._authn.authenticate(request.token_secret)
        return auth_pb.AuthenticateResponse(
            principal=auth_pb.Principal(
                account_id=p.account_id, token_id=p.token_id, roles=list(p.roles)
            )
        )

    async def LookupAccount(
        self, request: auth_pb.LookupAccountRequest, context: Context
    ) -> auth_pb.LookupAccountResponse:
        internal = self._services(context)
        account = await internal.accounts.lookup(request.account_id)
        return auth_pb.LookupAccountResponse(
            account_id=account.id,
            name=account.name,
            email=account.email,
            plan=plan_to_pb(internal.accounts.plan),
        )

    async def RecordComponentUsage(
        self, request: auth_pb.RecordComponentUsageRequest, context: Context
    ) -> auth_pb.RecordComponentUsageResponse:
        internal = self._services(context)
        usage = await internal.usage.record(
            request.account_id,
            request.component_count_delta,
            request.storage_bytes_delta,
            request.upload_bytes,
            operation_id=request.operation_id,
            cancel=request.cancel,
        )
        return auth_pb.RecordComponentUsageResponse(
            usage=auth_pb.ComponentUsage(
                component_count=usage.component_count,
                storage_bytes=usage.storage_bytes,
                monthly_upload_bytes=usage.monthly_upload_bytes,
            ),
            plan=plan_to_pb(internal.accounts.plan),
        )


class AccountApi(account_grpc.AccountServiceServicer):
    def __init__(self, accounts: AccountService, callers: LocalCallers) -> None:
        self._accounts = accounts
        self._callers = callers

    @staticmethod
    def _account(account: Account, context: Context) -> account_pb.AccountResponse:
        if is_rest(context):
            return account_pb.AccountResponse(rest=json_body(account.to_json()))
        return account_pb.AccountResponse(account=account_to_pb(account))

    async def CreateAccount(
        self, request: account_pb.CreateAccountRequest, context: Context
    ) -> account_pb.AccountResponse:
        caller = await self._callers.resolve(context)
        account = await self._accounts.create(
            caller, _opt(request, "name"), _opt(request, "email")
        )
        return self._account(account, context)

    async def GetAccount(
        self, request: account_pb.GetAccountRequest, context: Context
    ) -> account_pb.AccountResponse:
        caller = await self._callers.resolve(context)
        return self._account(await self._accounts.get(caller, request.account_id), context)

    async def UpdateAccount(
        self, request: account_pb.UpdateAccountRequest, context: Context
    ) -> account_pb.AccountResponse:
        caller = await self._callers.resolve(context)
        account = await self._accounts.update(
            caller,
            request.account_id,
            _opt(request, "name"),
            _opt(request, "email"),
            body_id=_opt(request, "id"),
            plan_id=_opt(request, "plan_id"),
        )
        return self._account(account, context)

    async def DeleteAccount(
        self, request: account_pb.DeleteAccountRequest, context: Context
    ) -> account_pb.DeleteAccountResponse:
        caller = await self._callers.resolve(context)
        await self._accounts.delete(caller, request.account_id)
        return account_pb.DeleteAccountResponse(rest=json_body({}) if is_rest(context) else None)

    async def GetAccountPlan(
        self, request: account_pb.GetAccountPlanRequest, context: Context
    ) -> account_pb.GetAccountPlanResponse:
        caller = await self._callers.resolve(context)
        plan = await self._accounts.plan_of(caller, request.account_id)
        if is_rest(context):
            return account_pb.GetAccountPlanResponse(rest=json_body(plan.to_json()))
        return account_pb.GetAccountPlanResponse(plan=plan_to_pb(plan))

    async def ListAccountGrants(
        self, request: account_pb.ListAccountGrantsRequest, context: Context
    ) -> account_pb.ListAccountGrantsResponse:
        caller = await self._callers.resolve(context)
        roles = await self._accounts.roles(caller, request.account_id)
        if is_rest(context):
            return account_pb.ListAccountGrantsResponse(rest=json_body(list(roles)))
        return account_pb.ListAccountGrantsResponse(roles=list(roles))

    @staticmethod
    def _role(role: str, context: Context) -> account_pb.AccountGrantResponse:
        if is_rest(context):
            return account_pb.AccountGrantResponse(rest=json_body(role))
        return account_pb.AccountGrantResponse(role=role)

    async def GetAccountGrant(
        self, request: account_pb.AccountGrantRequest, context: Context
    ) -> account_pb.AccountGrantResponse:
        caller = await self._callers.resolve(context)
        role = await self._accounts.role(caller, request.account_id, request.role)
        return self._role(role, context)

    async def PutAccountGrant(
        self, request: account_pb.AccountGrantRequest, context: Context
    ) -> account_pb.AccountGrantResponse:
        caller = await self._callers.resolve(context)
        role = await self._accounts.grant_role(caller, request.account_id, request.role)
        return self._role(role, context)

    async def DeleteAccountGrant(
        self, request: account_pb.AccountGrantRequest, context: Context
    ) -> account_pb.DeleteAccountGrantResponse:
        caller = await self._callers.resolve(context)
        await self._accounts.revoke_role(caller, request.account_id, request.role)
        return account_pb.DeleteAccountGrantResponse(
            rest=json_body({}) if is_rest(context) else None
        )


def _unsafe(issued: IssuedToken, context: Context) -> token_pb.UnsafeTokenResponse:
    if is_rest(context):
        return token_pb.UnsafeTokenResponse(rest=json_body(issued.to_json()))
    return token_pb.UnsafeTokenResponse(token=unsafe_to_pb(issued))


def _token(token: Token, context: Context) -> token_pb.TokenResponse:
    if is_rest(context):
        return token_pb.TokenResponse(rest=json_body(token.to_json()))
    return token_pb.TokenResponse(token=token_to_pb(token))


class TokenApi(token_grpc.TokenServiceServicer):
    def __init__(self, tokens: TokenService, callers: LocalCallers) -> None:
        self._tokens = tokens
        self._callers = callers

    async def ListTokens(
        self, request: token_pb.ListTokensRequest, context: Context
    ) -> token_pb.ListTokensResponse:
        caller = await self._callers.resolve(context)
        tokens = await self._tokens.list(caller, request.account_id)
        if is_rest(context):
            return token_pb.ListTokensResponse(rest=json_body([t.to_json() for t in tokens]))
        return token_pb.ListTokensResponse(tokens=[token_to_pb(t) for t in tokens])

    async def CreateToken(
        self, request: token_pb.CreateTokenRequest, context: Context
    ) -> token_pb.UnsafeTokenResponse:
        caller = await self._callers.resolve(context)
        issued = await self._tokens.create(
            caller, request.account_id, _opt(request, "expires_at")
        )
        return _unsafe(issued, context)

    async def GetToken(
        self, request: token_pb.TokenRequest, context: Context
    ) -> token_pb.TokenResponse:
        caller = await self._callers.resolve(context)
        return _token(await self._tokens.get(caller, request.account_id, request.token_id), context)

    async def DeleteToken(
        self, request: token_pb.TokenRequest, context: Context
    ) -> token_pb.DeleteTokenResponse:
        caller = await self._callers.resolve(context)
        await self._tokens.delete(caller, request.account_id, request.token_id)
        return token_pb.DeleteTokenResponse(rest=json_body({}) if is_rest(context) else None)


def _json_string_body(raw: bytes) -> str:
    """Golem's device/complete body: the encodedSession as a JSON string."""
    value = jsonbody.parse_request(raw, "Invalid body: ")
    if not isinstance(value, str):
        raise InvalidRequest("Invalid body: expected the encodedSession as a JSON string")
    return value


class LoginApi(login_grpc.LoginServiceServicer):
    def __init__(self, login: LoginService, tokens: TokenService, callers: LocalCallers) -> None:
        self._login = login
        self._tokens = tokens
        self._callers = callers

    async def CurrentToken(
        self, request: login_pb.CurrentTokenRequest, context: Context
    ) -> token_pb.TokenResponse:
        caller = await self._callers.resolve(context)
        return _token(await self._tokens.current(caller), context)

    async def OAuth2(
        self, request: login_pb.OAuth2Request, context: Context
    ) -> token_pb.UnsafeTokenResponse:
        issued = await self._login.exchange_access_token(
            _opt(request, "provider"), _opt(request, "access_token")
        )
        return _unsafe(issued, context)

    async def StartDeviceLogin(
        self, request: login_pb.StartDeviceLoginRequest, context: Context
    ) -> login_pb.StartDeviceLoginResponse:
        started = await self._login.start_device()
        if is_rest(context):
            return login_pb.StartDeviceLoginResponse(rest=json_body(started.to_json()))
        return login_pb.StartDeviceLoginResponse(
            url=started.url,
            user_code=started.user_code,
            expires=started.expires,
            encoded_session=started.encoded_session,
        )

    async def CompleteDeviceLogin(
        self, request: login_pb.CompleteDeviceLoginRequest, context: Context
    ) -> token_pb.UnsafeTokenResponse:
        session = request.encoded_session
        if request.HasField("rest"):
            session = _json_string_body(request.rest.data)
        return _unsafe(await self._login.complete_device(session), context)

    async def AuthorizeWebLogin(
        self, request: login_pb.AuthorizeWebLoginRequest, context: Context
    ) -> login_pb.AuthorizeWebLoginResponse:
        url, state = await self._login.authorize_web(
            _opt(request, "provider"), _opt(request, "redirect")
        )
        if is_rest(context):
            return login_pb.AuthorizeWebLoginResponse(
                rest=json_body({"url": url, "state": state})
            )
        return login_pb.AuthorizeWebLoginResponse(url=url, state=state)

    async def WebLoginCallback(
        self, request: login_pb.WebLoginCallbackRequest, context: Context
    ) -> login_pb.WebLoginCallbackResponse:
        redirect = await self._login.web_callback(_opt(request, "code"), _opt(request, "state"))
        if not is_rest(context):
            return login_pb.WebLoginCallbackResponse(redirect=redirect)
        if redirect:
            await context.send_initial_metadata(
                ((HTTP_STATUS_HEADER, "302"), ("location", redirect))
            )
        return login_pb.WebLoginCallbackResponse(rest=json_body({}))

    async def PollWebLogin(
        self, request: login_pb.PollWebLoginRequest, context: Context
    ) -> login_pb.PollWebLoginResponse:
        polled = await self._login.poll_web(_opt(request, "state"))
        if not is_rest(context):
            if polled.token is None:
                return login_pb.PollWebLoginResponse(completed=False)
            return login_pb.PollWebLoginResponse(
                completed=True, token=unsafe_to_pb(polled.token)
            )
        if polled.token is None:
            await context.send_initial_metadata(((HTTP_STATUS_HEADER, "202"),))
            return login_pb.PollWebLoginResponse(rest=json_body({}))
        return login_pb.PollWebLoginResponse(rest=json_body(polled.token.to_json()))


class AccountSummaryApi(account_grpc.AccountSummaryServiceServicer):
    def __init__(self, summaries: AccountSummaryService, callers: LocalCallers) -> None:
        self._summaries = summaries
        self._callers = callers

    async def ListAccountSummaries(
        self, request: account_pb.ListAccountSummariesRequest, context: Context
    ) -> account_pb.ListAccountSummariesResponse:
        caller = await self._callers.resolve(context)
        page = await self._summaries.page(
            caller,
            request.skip if request.HasField("skip") else None,
            request.limit if request.HasField("limit") else None,
        )
        if is_rest(context):
            return account_pb.ListAccountSummariesResponse(
                rest=json_body([s.to_json() for s in page])
            )
        return account_pb.ListAccountSummariesResponse(accounts=[
            account_pb.AccountSummary(
                id=s.account.id, name=s.account.name, email=s.account.email,
                component_count=s.component_count, worker_count=0, created_at=s.created_at,
            )
            for s in page
        ])

    async def CountAccounts(
        self, request: account_pb.CountAccountsRequest, context: Context
    ) -> account_pb.CountAccountsResponse:
        count = await self._summaries.count(await self._callers.resolve(context))
        if is_rest(context):
            return account_pb.CountAccountsResponse(rest=json_body(count))
        return account_pb.CountAccountsResponse(count=count)


def _fuel_updates(body: bytes) -> dict[str, int]:
    """Golem's BatchUpdateResourceLimits JSON: `{"updates": {"<account id>": <int64>}}`."""
    data = jsonbody.parse_request(body or b"null", "Invalid JSON body: ")
    updates = data.get("updates") if isinstance(data, dict) else None
    if not isinstance(data, dict) or "updates" not in data:
        raise InvalidRequest.for_field("updates", "Missing field: updates")
    if not isinstance(updates, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in updates.values()
    ):
        raise InvalidRequest.for_field(
            "updates", "Invalid field updates: expected an object of account id -> integer")
    return {str(k): v for k, v in updates.items()}


class ResourceLimitsApi(account_grpc.ResourceLimitsServiceServicer):
    def __init__(self, limits: ResourceLimitsService, callers: LocalCallers) -> None:
        self._limits = limits
        self._callers = callers

    async def GetResourceLimits(
        self, request: account_pb.GetResourceLimitsRequest, context: Context
    ) -> account_pb.ResourceLimitsResponse:
        caller = await self._callers.resolve(context)
        limits = await self._limits.limits(caller, _opt(request, "account_id"))
        if is_rest(context):
            return account_pb.ResourceLimitsResponse(rest=json_body(limits.to_json()))
        return account_pb.ResourceLimitsResponse(
            available_fuel=limits.available_fuel,
            max_memory_per_worker=limits.max_memory_per_worker,
        )

    async def UpdateResourceLimits(
        self, request: account_pb.UpdateResourceLimitsRequest, context: Context
    ) -> account_pb.UpdateResourceLimitsResponse:
        caller = await self._callers.resolve(context)
        if request.HasField("rest"):
            updates = _fuel_updates(request.rest.data)
        else:
            updates = dict(request.updates)
        await self._limits.record_fuel(caller, updates)
        return account_pb.UpdateResourceLimitsResponse(
            rest=json_body({}) if is_rest(context) else None
        )
