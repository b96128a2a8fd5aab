"""Golem's plugin registry and project-level plugin installations (Dec 2024 shapes).

A plugin definition belongs to the account that registers it (Golem's CloudPluginOwner): every
account sees and changes only its own. An installation, on a component or on a project, refers to
a plugin registered by the project's owner whose scope covers the target (Golem's
`CloudPluginScope.valid_in_component`); otherwise 404 `Plugin not found: name@version` or 401
`Plugin name@version not available for ...`, Golem's messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Protocol

from cairn.component.model import (
    PluginInstallation,
    check_installation,
    parse_installation_id,
)
from cairn.project.model import ProjectAction
from cairn.project.plugin_model import PluginDefinition, PluginScope
from cairn.project.service import ProjectAccess, ProjectService
from cairn.project.store import ProjectStore
from cairn.runtime.errors import AlreadyExists, NotFound, PermissionDenied
from cairn.runtime.principal import Principal

PLUGIN_NOT_FOUND = "Plugin not found"


class ComponentDirectory(Protocol):
    """Which project a component is in, as the caller may see it (None: unknown or hidden)."""

    async def project_of(self, caller: Principal, component_id: str) -> str | None: ...


class PluginService:
    """The registry, the installation checks, and project-level installations."""

    def __init__(
        self,
        store: ProjectStore,
        projects: ProjectService,
        components: ComponentDirectory | None = None,
    ) -> None:
        self._store = store
        self._projects = projects
        self._components = components

    # --- the registry ---------------------------------------------------------------------

    async def list_plugins(
        self, caller: Principal, raw_scope: str | None
    ) -> list[PluginDefinition]:
        plugins = await self._store.plugins_of(caller.account_id)
        if raw_scope is None:
            return plugins
        scope = PluginScope.from_query(raw_scope)
        if scope.kind == "Global":
            return [p for p in plugins if p.scope.kind == "Global"]
        if scope.kind == "Project":
            return [p for p in plugins if p.scope.covers_project(scope.target)]
        # A component scope also sees the plugins of the component's project.
        project = None
        if self._components is not None:
            project = await self._components.project_of(caller, scope.target)
        return [p for p in plugins if p.scope.covers_component(scope.target, project or "")]

    async def versions(self, caller: Principal, name: str) -> list[PluginDefinition]:
        return [p for p in await self._store.plugins_of(caller.account_id) if p.name == name]

    async def create(self, caller: Principal, definition: PluginDefinition) -> None:
        if definition.scope.kind == "Project":
            # A project scope names a project the caller may see.
            await self._projects.get_project(caller, definition.scope.target)
        if not await self._store.add_plugin(definition):
            raise AlreadyExists(
                f"Plugin already exists: {definition.name}@{definition.version}"
            )

    async def get(self, caller: Principal, name: str, version: str) -> PluginDefinition:
        plugin = await self._store.plugin(caller.account_id, name, version)
        if plugin is None:
            raise NotFound(PLUGIN_NOT_FOUND)
        return plugin

    async def delete(self, caller: Principal, name: str, version: str) -> None:
        if not await self._store.delete_plugin(caller.account_id, name, version):
            raise NotFound(PLUGIN_NOT_FOUND)

    async def _registered(self, owner: str, name: str, version: str) -> PluginDefinition:
        plugin = await self._store.plugin(owner, name, version)
        if plugin is None:
            raise NotFound(f"Plugin not found: {name}@{version}")
        return plugin

    async def authorize_component_installation(
        self, caller: Principal, raw_project_id: str, component_id: str, name: str, version: str
    ) -> PluginDefinition:
        """For the component service: UpdateComponent on the project, and a plugin registered by
        the project's owner in a scope covering the component."""
        project = await self._projects.get_project(
            caller, raw_project_id, ProjectAction.UPDATE_COMPONENT
        )
        plugin = await self._registered(project.owner_account_id, name, version)
        if not plugin.scope.covers_component(component_id, project.id):
            raise PermissionDenied(
                f"Plugin {name}@{version} not available for component {component_id}"
            )
        return plugin

    # --- project-level installations ------------------------------------------------------

    async def project_installations(
        self, caller: Principal, raw_project_id: str
    ) -> list[PluginInstallation]:
        project = await self._projects.get_project(caller, raw_project_id)
        return await self._store.project_installations(project.id)

    async def install_on_project(
        self,
        caller: Principal,
        raw_project_id: str,
        *,
        name: str | None,
        version: str | None,
        priority: int | None,
        parameters: Mapping[str, str],
    ) -> PluginInstallation:
        project = await self._projects.get_project(caller, raw_project_id)
        ProjectAccess.require_owner(caller, project, "change its plugin installations")
        check_installation(name, version, priority)
        assert name is not None and version is not None and priority is not None
        plugin = await self._registered(project.owner_account_id, name, version)
        if not plugin.scope.covers_project(project.id):
            raise PermissionDenied(
                f"Plugin {name}@{version} not available for project {project.id}"
            )
        installation = PluginInstallation(
            str(uuid.uuid4()), name, version, priority, dict(parameters)
        )
        await self._store.put_project_installation(project.id, installation)
        return installation

    async def _project_installation(
        self, caller: Principal, raw_project_id: str, raw_installation_id: str
    ) -> tuple[str, PluginInstallation]:
        project = await self._projects.get_project(caller, raw_project_id)
        ProjectAccess.require_owner(caller, project, "change its plugin installations")
        installation_id = parse_installation_id(raw_installation_id)
        found = await self._store.project_installation(project.id, installation_id)
        if found is None:
            raise NotFound(f"Plugin installation not found: {installation_id}")
        return project.id, found

    async def update_project_installation(
        self,
        caller: Principal,
        raw_project_id: str,
        raw_installation_id: str,
        *,
        priority: int | None,
        parameters: Mapping[str, str],
    ) -> None:
        check_installation("-", "-", priority)
        assert priority is not None
        project_id, found = await self._project_installation(
            caller, raw_project_id, raw_installation_id
        )
        await self._store.put_project_installation(
            project_id,
            PluginInstallation(found.id, found.name, found.version, priority, dict(parameters)),
        )

    async def uninstall_from_project(
        self, caller: Principal, raw_project_id: str, raw_installation_id: str
    ) -> None:
        project_id, found = await self._project_installation(
            caller, raw_project_id, raw_installation_id
        )
        await self._store.delete_project_installation(project_id, found.id)
