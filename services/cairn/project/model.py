"""Projects and project actions, as the domain sees them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ProjectType(enum.Enum):
    DEFAULT = "Default"
    NON_DEFAULT = "NonDefault"


class ProjectAction(enum.Enum):
    """Golem's ProjectAction (Dec 2024 names plus the 2025 project/plugin actions), in its order."""

    VIEW_COMPONENT = "ViewComponent"
    CREATE_COMPONENT = "CreateComponent"
    UPDATE_COMPONENT = "UpdateComponent"
    DELETE_COMPONENT = "DeleteComponent"
    VIEW_WORKER = "ViewWorker"
    CREATE_WORKER = "CreateWorker"
    UPDATE_WORKER = "UpdateWorker"
    DELETE_WORKER = "DeleteWorker"
    VIEW_PROJECT_GRANTS = "ViewProjectGrants"
    CREATE_PROJECT_GRANTS = "CreateProjectGrants"
    DELETE_PROJECT_GRANTS = "DeleteProjectGrants"
    VIEW_API_DEFINITION = "ViewApiDefinition"
    CREATE_API_DEFINITION = "CreateApiDefinition"
    UPDATE_API_DEFINITION = "UpdateApiDefinition"
    DELETE_API_DEFINITION = "DeleteApiDefinition"
    DELETE_PROJECT = "DeleteProject"
    VIEW_PLUGIN_INSTALLATIONS = "ViewPluginInstallations"
    CREATE_PLUGIN_INSTALLATION = "CreatePluginInstallation"
    UPDATE_PLUGIN_INSTALLATION = "UpdatePluginInstallation"
    DELETE_PLUGIN_INSTALLATION = "DeletePluginInstallation"


ALL_ACTIONS: tuple[ProjectAction, ...] = tuple(ProjectAction)


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    owner_account_id: str
    description: str
    project_type: ProjectType
    default_environment_id: str = "default"

    def to_json(self) -> dict[str, Any]:
        """Golem's Project JSON."""
        return {
            "projectId": self.id,
            "projectData": {
                "name": self.name,
                "ownerAccountId": self.owner_account_id,
                "description": self.description,
                "defaultEnvironmentId": self.default_environment_id,
                "projectType": self.project_type.value,
            },
        }

    def to_record(self) -> dict[str, str]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner_account_id,
            "description": self.description,
            "type": self.project_type.value,
        }

    @classmethod
    def from_record(cls, data: dict[str, str]) -> Project:
        return cls(
            data["id"], data["name"], data["owner"], data["description"], ProjectType(data["type"])
        )
