"""Projects, project actions, policies and grants, as the domain sees them."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cairn.runtime.errors import quote


class ProjectType(enum.Enum):
    DEFAULT = "Default"
    NON_DEFAULT = "NonDefault"


class ProjectAction(enum.Enum):
    """Golem's ProjectAction of Dec 2024: its 15 values, in its order.

    Golem's 2025 names (DeleteProject, the plugin-installation actions) are not project actions
    here: policies refuse them, and nothing lists them.
    """

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


ALL_ACTIONS: tuple[ProjectAction, ...] = tuple(ProjectAction)

# Older spellings accepted on input: 2023 docs (*Instance) and Jan 2024 (*Template).
_ACTION_ALIASES = {
    f"{verb}{old}": ProjectAction(f"{verb}{new}")
    for verb in ("View", "Create", "Update", "Delete")
    for old, new in (("Instance", "Worker"), ("Template", "Component"))
}

_ACTIONS_BY_NAME = {a.value: a for a in ProjectAction} | _ACTION_ALIASES


def parse_action(raw: object) -> ProjectAction:
    """A ProjectAction from its Golem name (current or older spelling)."""
    action = _ACTIONS_BY_NAME.get(raw) if isinstance(raw, str) else None
    if action is None:
        raise ValueError(f"Invalid project action: {quote(repr(raw))}")
    return action


def in_enum_order(actions: Iterable[ProjectAction]) -> tuple[ProjectAction, ...]:
    """Distinct actions in Golem's enum order, so every listing is stable."""
    chosen = set(actions)
    return tuple(a for a in ALL_ACTIONS if a in chosen)


@dataclass(frozen=True)
class ProjectPolicy:
    id: str
    name: str
    actions: tuple[ProjectAction, ...]
    # The account that created it: it may use it in grants and see it.
    owner_account_id: str

    def to_json(self) -> dict[str, Any]:
        """Golem's ProjectPolicy JSON (2024+: projectActions wraps the list)."""
        return {
            "id": self.id,
            "name": self.name,
            "projectActions": {"actions": [a.value for a in self.actions]},
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "actions": [a.value for a in self.actions],
            "owner": self.owner_account_id,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> ProjectPolicy:
        # Policies stored before the Dec 2024 enum may name 2025 actions: they grant nothing.
        actions = tuple(_ACTIONS_BY_NAME[a] for a in data["actions"] if a in _ACTIONS_BY_NAME)
        return cls(data["id"], data["name"], actions, data["owner"])


@dataclass(frozen=True)
class ProjectGrant:
    id: str
    grantee_account_id: str
    project_id: str
    policy_id: str

    def to_json(self) -> dict[str, Any]:
        """Golem's ProjectGrant JSON."""
        return {
            "id": self.id,
            "data": {
                "granteeAccountId": self.grantee_account_id,
                "grantorProjectId": self.project_id,
                "projectPolicyId": self.policy_id,
            },
        }

    def to_record(self) -> dict[str, str]:
        return {
            "id": self.id,
            "grantee": self.grantee_account_id,
            "project": self.project_id,
            "policy": self.policy_id,
        }

    @classmethod
    def from_record(cls, data: dict[str, str]) -> ProjectGrant:
        return cls(data["id"], data["grantee"], data["project"], data["policy"])


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
