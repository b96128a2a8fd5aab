"""Project use cases, with the one access check every project operation goes through.

`ProjectAccess` is the single place that decides what a caller may do on a project: the owner and
admins everything, a grantee the actions of the policies of its grants, anyone else nothing. The
component service asks it too (AuthorizeProjectAction), so grants apply there unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cairn.project.model import (
    ALL_ACTIONS,
    Project,
    ProjectAction,
    ProjectGrant,
    ProjectPolicy,
    ProjectType,
    in_enum_order,
)
from cairn.project.store import ProjectStore
from cairn.runtime.errors import (
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    Problems,
    quote,
)
from cairn.runtime.principal import Principal

DEFAULT_PROJECT_NAME = "default-project"
# Accounts whose default project id a ProjectService remembers (the ids never change).
KNOWN_DEFAULTS_MAX = 10_000


def _parse_uuid(raw: str, what: str, field: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidRequest.for_field(
            field, f"Invalid {what}: {quote(raw)!r} is not a UUID"
        ) from None


def parse_project_id(raw: str) -> str:
    return _parse_uuid(raw, "project id", "projectId")


@dataclass(frozen=True)
class AccountInfo:
    """What the project service needs to know about an account (from the auth service)."""

    account_id: str
    project_limit: int


class AccountDirectory(Protocol):
    """Looks accounts up on behalf of a caller; None when there is no such account."""

    async def lookup(self, caller: Principal, account_id: str) -> AccountInfo | None: ...


class ProjectAccess:
    """Which actions a caller has on a project: the one place access is decided."""

    def __init__(self, store: ProjectStore) -> None:
        self._store = store

    async def actions(self, caller: Principal, project: Project) -> tuple[ProjectAction, ...]:
        if caller.is_admin or caller.account_id == project.owner_account_id:
            return ALL_ACTIONS
        grants = [
            g for g in await self._store.grants_to(caller.account_id) if g.project_id == project.id
        ]
        if not grants:
            return ()
        policies = await self._store.policies(g.policy_id for g in grants)
        return in_enum_order(a for p in policies.values() for a in p.actions)

    async def require(
        self, caller: Principal, project: Project, action: ProjectAction | None
    ) -> tuple[ProjectAction, ...]:
        """The caller's actions; PermissionDenied unless they include `action` (None: any)."""
        allowed = await self.actions(caller, project)
        if action is None and not allowed:
            raise PermissionDenied(f"Access to project `{project.id}` is not allowed")
        if action is not None and action not in allowed:
            raise PermissionDenied(
                f"Action `{action.value}` is not allowed on project `{project.id}`"
            )
        return allowed

    @staticmethod
    def require_owner(caller: Principal, project: Project, what: str) -> None:
        """Only the owner and admins may do `what` (what no Dec 2024 project action grants)."""
        if not (caller.is_admin or caller.account_id == project.owner_account_id):
            raise PermissionDenied(
                f"Only the owner of project `{project.id}` or an admin may {what}"
            )


class ProjectService:
    def __init__(
        self,
        store: ProjectStore,
        access: ProjectAccess | None = None,
        accounts: AccountDirectory | None = None,
    ) -> None:
        """`accounts` None: no plan limits and no grantee checks (tests of the bare service)."""
        self._store = store
        self._access = access or ProjectAccess(store)
        self._accounts = accounts
        # account id -> its default project's id. A default project is never deleted or
        # replaced, so once known the id saves a Redis round trip per call.
        self._known_defaults: dict[str, str] = {}

    async def default_project(self, caller: Principal) -> Project:
        account = caller.account_id
        known = self._known_defaults.get(account)
        if known is not None:
            project = await self._store.get(known)
            if project is not None:
                return project
            del self._known_defaults[account]  # gone after all (data removed by hand): ask again
        candidate = Project(
            id=str(uuid.uuid4()),
            name=DEFAULT_PROJECT_NAME,
            owner_account_id=account,
            description=f"Default project of the account {account}",
            project_type=ProjectType.DEFAULT,
        )
        project_id = await self._store.ensure_default(candidate)
        project = await self._store.get(project_id)
        if project is None:  # only if it was deleted between the two calls, which the API forbids
            raise NotFound(f"Project not found: {project_id}")
        if len(self._known_defaults) >= KNOWN_DEFAULTS_MAX:
            self._known_defaults.clear()
        self._known_defaults[account] = project_id
        return project

    async def list_projects(self, caller: Principal, name: str | None) -> list[Project]:
        """Own projects (oldest first), then projects granted to the caller (by grant age)."""
        await self.default_project(caller)
        owned = await self._store.owned_ids(caller.account_id)
        granted_ids: list[str] = []
        for grant in await self._store.grants_to(caller.account_id):
            if grant.project_id not in owned and grant.project_id not in granted_ids:
                granted_ids.append(grant.project_id)
        granted = [
            p for p in await self._store.get_many(granted_ids)
            if await self._access.actions(caller, p)
        ]
        projects = await self._store.get_many(owned) + granted
        return [p for p in projects if name is None or p.name == name]

    async def create_project(
        self, caller: Principal, name: str | None, owner: str | None, description: str | None
    ) -> Project:
        problems = Problems()
        for field, value in (
            ("name", name), ("ownerAccountId", owner), ("description", description)
        ):
            if value is None:
                problems.add(field, f"Missing field: {field}")
        if name is not None and not name.strip():
            problems.add("name", "Project name must not be empty")
        problems.raise_if_any()
        assert name is not None and owner is not None and description is not None
        if owner != caller.account_id and not caller.is_admin:
            raise PermissionDenied(f"Access to account `{owner}` is not allowed")
        limit = None
        if self._accounts is not None:
            info = await self._accounts.lookup(caller, owner)
            if info is None:
                raise NotFound(f"Account not found: {owner}")
            limit = info.project_limit
        project = Project(str(uuid.uuid4()), name, owner, description, ProjectType.NON_DEFAULT)
        # Golem gives every account its default project first; keep listing order the same.
        await self.default_project(Principal(owner))
        if not await self._store.create(project, limit):
            raise LimitExceeded(f"Limit Exceeded: Project limit exceeded (limit: {limit})")
        return project

    async def get_project(
        self, caller: Principal, raw_id: str, action: ProjectAction | None = None
    ) -> Project:
        """The project, if the caller may see it (or do `action` on it)."""
        project_id = parse_project_id(raw_id)
        project = await self._store.get(project_id)
        if project is None:
            raise NotFound(f"Project not found: {project_id}")
        await self._access.require(caller, project, action)
        return project

    async def delete_project(self, caller: Principal, raw_id: str) -> None:
        # Golem (Dec 2024): the owner or an admin; its 2025 DeleteProject action is not granted.
        project = await self.get_project(caller, raw_id)
        self._access.require_owner(caller, project, "delete it")
        if project.project_type is ProjectType.DEFAULT:
            raise InvalidRequest("Cannot delete default project")
        await self._store.delete(project)

    async def actions(self, caller: Principal, raw_id: str) -> tuple[ProjectAction, ...]:
        project_id = parse_project_id(raw_id)
        project = await self._store.get(project_id)
        if project is None:
            raise NotFound(f"Project not found: {project_id}")
        return await self._access.require(caller, project, None)

    # --- policies -------------------------------------------------------------------------

    async def create_policy(
        self, caller: Principal, name: str | None, actions: Sequence[ProjectAction] | None
    ) -> ProjectPolicy:
        problems = Problems()
        for field, value in (("name", name), ("projectActions", actions)):
            if value is None:
                problems.add(field, f"Missing field: {field}")
        problems.raise_if_any()
        assert name is not None and actions is not None
        policy = ProjectPolicy(str(uuid.uuid4()), name, in_enum_order(actions), caller.account_id)
        await self._store.put_policy(policy)
        return policy

    async def get_policy(self, caller: Principal, raw_id: str) -> ProjectPolicy:
        """A policy its creator, an admin, or a holder of a grant using it may see."""
        policy_id = _parse_uuid(raw_id, "project policy id", "projectPolicyId")
        policy = await self._store.policy(policy_id)
        if policy is None or not await self._may_see_policy(caller, policy):
            # Same answer for hidden and missing: policy ids do not leak.
            raise NotFound(f"Project policy not found: {policy_id}")
        return policy

    async def _may_see_policy(self, caller: Principal, policy: ProjectPolicy) -> bool:
        if caller.is_admin or caller.account_id == policy.owner_account_id:
            return True
        return any(g.policy_id == policy.id for g in await self._store.grants_to(caller.account_id))

    # --- grants ---------------------------------------------------------------------------

    async def list_grants(self, caller: Principal, raw_project_id: str) -> list[ProjectGrant]:
        project = await self.get_project(
            caller, raw_project_id, ProjectAction.VIEW_PROJECT_GRANTS
        )
        return await self._store.grants_of(project.id)

    async def create_grant(
        self,
        caller: Principal,
        raw_project_id: str,
        grantee: str | None,
        policy_id: str | None,
        actions: Sequence[ProjectAction] | None,
        policy_name: str | None,
    ) -> ProjectGrant:
        project = await self.get_project(
            caller, raw_project_id, ProjectAction.CREATE_PROJECT_GRANTS
        )
        problems = Problems()
        if not grantee:
            problems.add("granteeAccountId", "Missing field: granteeAccountId")
        if policy_id is None and actions is None:
            problems.add("projectActions", "Missing field: projectActions")
        problems.raise_if_any()
        assert grantee is not None
        if self._accounts is not None and await self._accounts.lookup(caller, grantee) is None:
            raise NotFound(f"Account not found: {grantee}")
        if policy_id is not None:
            policy = await self.get_policy(caller, policy_id)
        else:
            assert actions is not None
            policy = await self.create_policy(caller, policy_name or "", actions)
        # A grantee allowed to grant may pass on only what it holds itself.
        held = await self._access.actions(caller, project)
        for action in policy.actions:
            if action not in held:
                raise PermissionDenied(
                    f"Action `{action.value}` is not allowed on project `{project.id}`"
                )
        grant = ProjectGrant(str(uuid.uuid4()), grantee, project.id, policy.id)
        await self._store.add_grant(grant)
        return grant

    async def _grant_on(
        self, caller: Principal, raw_project_id: str, raw_grant_id: str, action: ProjectAction
    ) -> ProjectGrant:
        project = await self.get_project(caller, raw_project_id, action)
        grant_id = _parse_uuid(raw_grant_id, "project grant id", "projectGrantId")
        grant = await self._store.grant(grant_id)
        if grant is None or grant.project_id != project.id:
            raise NotFound(f"Project grant not found: {grant_id}")
        return grant

    async def get_grant(
        self, caller: Principal, raw_project_id: str, raw_grant_id: str
    ) -> ProjectGrant:
        return await self._grant_on(
            caller, raw_project_id, raw_grant_id, ProjectAction.VIEW_PROJECT_GRANTS
        )

    async def delete_grant(
        self, caller: Principal, raw_project_id: str, raw_grant_id: str
    ) -> None:
        grant = await self._grant_on(
            caller, raw_project_id, raw_grant_id, ProjectAction.DELETE_PROJECT_GRANTS
        )
        await self._store.delete_grant(grant)
