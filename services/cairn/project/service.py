"""Project use cases, with the one access check every project operation goes through."""

from __future__ import annotations

import uuid

from cairn.project.model import ALL_ACTIONS, Project, ProjectAction, ProjectType
from cairn.project.store import ProjectStore
from cairn.runtime.errors import InvalidRequest, NotFound, PermissionDenied
from cairn.runtime.principal import Principal

DEFAULT_PROJECT_NAME = "default-project"


def parse_project_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidRequest(f"Invalid project id: {raw!r} is not a UUID") from None


class ProjectAccess:
    """Which actions a caller has on a project. The single place grants will plug into."""

    def actions(self, caller: Principal, project: Project) -> tuple[ProjectAction, ...]:
        if caller.is_admin or caller.account_id == project.owner_account_id:
            return ALL_ACTIONS
        return ()

    def require(self, caller: Principal, project: Project, action: ProjectAction | None) -> None:
        """Raise PermissionDenied unless the caller may do `action` (None: any access at all)."""
        allowed = self.actions(caller, project)
        if action is None and not allowed:
            raise PermissionDenied(f"Access to project `{project.id}` is not allowed")
        if action is not None and action not in allowed:
            raise PermissionDenied(
                f"Action `{action.value}` is not allowed on project `{project.id}`"
            )


class ProjectService:
    def __init__(self, store: ProjectStore, access: ProjectAccess | None = None) -> None:
        self._store = store
        self._access = access or ProjectAccess()

    async def default_project(self, caller: Principal) -> Project:
        account = caller.account_id
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
        return project

    async def list_projects(self, caller: Principal, name: str | None) -> list[Project]:
        await self.default_project(caller)
        projects = await self._store.get_many(await self._store.owned_ids(caller.account_id))
        return [p for p in projects if name is None or p.name == name]

    async def create_project(
        self, caller: Principal, name: str | None, owner: str | None, description: str | None
    ) -> Project:
        problems = [
            f"Missing field: {field}"
            for field, value in (
                ("name", name), ("ownerAccountId", owner), ("description", description)
            )
            if value is None
        ]
        if name is not None and not name.strip():
            problems.append("Project name must not be empty")
        if problems:
            raise InvalidRequest(*problems)
        assert name is not None and owner is not None and description is not None
        if owner != caller.account_id and not caller.is_admin:
            raise PermissionDenied(f"Access to account `{owner}` is not allowed")
        project = Project(str(uuid.uuid4()), name, owner, description, ProjectType.NON_DEFAULT)
        # Golem gives every account its default project first; keep listing order the same.
        await self.default_project(Principal(owner))
        await self._store.create(project)
        return project

    async def get_project(
        self, caller: Principal, raw_id: str, action: ProjectAction | None = None
    ) -> Project:
        """The project, if the caller may see it (or do `action` on it)."""
        project_id = parse_project_id(raw_id)
        project = await self._store.get(project_id)
        if project is None:
            raise NotFound(f"Project not found: {project_id}")
        self._access.require(caller, project, action)
        return project

    async def delete_project(self, caller: Principal, raw_id: str) -> None:
        project = await self.get_project(caller, raw_id, ProjectAction.DELETE_PROJECT)
        if project.project_type is ProjectType.DEFAULT:
            raise InvalidRequest("Cannot delete default project")
        await self._store.delete(project)

    async def actions(self, caller: Principal, raw_id: str) -> tuple[ProjectAction, ...]:
        project = await self.get_project(caller, raw_id)
        return self._access.actions(caller, project)
