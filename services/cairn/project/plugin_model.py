"""Plugin definitions as Golem's Dec 2024 registry has them: owner, scope, type-specific specs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cairn.runtime.errors import InvalidRequest, Problems

ScopeKind = Literal["Global", "Component", "Project"]
UINT64_MAX = 2**64 - 1


def _uuid(raw: object, what: str, problems: Problems) -> str:
    """The canonical form of a UUID field; "" and a problem if it is not one."""
    if isinstance(raw, str):
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            pass  # reported below, like a value that is not a string
    problems.add(what, f"Invalid field {what}: expected a UUID")
    return ""


@dataclass(frozen=True)
class PluginScope:
    """Where a plugin may be installed: anywhere, in one component, or in one project."""

    kind: ScopeKind
    target: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.kind == "Component":
            return {"type": "Component", "componentId": self.target}
        if self.kind == "Project":
            return {"type": "Project", "projectId": self.target}
        return {"type": "Global"}

    @classmethod
    def from_json(cls, data: object, problems: Problems) -> PluginScope:
        kind = data.get("type") if isinstance(data, dict) else None
        if not isinstance(data, dict) or kind not in ("Global", "Component", "Project"):
            problems.add("scope", "Invalid field scope: expected {\"type\": \"Global\" | "
                         "\"Component\" | \"Project\", ...}")
            return cls("Global")
        if kind == "Component":
            return cls("Component", _uuid(data.get("componentId"), "scope.componentId", problems))
        if kind == "Project":
            return cls("Project", _uuid(data.get("projectId"), "scope.projectId", problems))
        return cls("Global")

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> PluginScope:
        """From stored JSON, validated when the plugin was registered."""
        return cls(data["type"], data.get("componentId") or data.get("projectId") or "")

    @classmethod
    def from_query(cls, raw: str) -> PluginScope:
        """Golem's query form: `global`, `component:<id>` or `project:<id>`."""
        kind, _, target = raw.partition(":")
        problems = Problems()
        if raw == "global":
            return cls("Global")
        if kind in ("component", "project") and target:
            checked = _uuid(target, "scope", problems)
            if not problems:
                return cls("Component" if kind == "component" else "Project", checked)
        raise InvalidRequest(
            "Unexpected representation of plugin scope - must be 'global', "
            "'component:<component_id>' or 'project:<project_id>'"
        )

    def covers_project(self, project_id: str) -> bool:
        return self.kind == "Global" or (self.kind == "Project" and self.target == project_id)

    def covers_component(self, component_id: str, project_id: str) -> bool:
        return (
            self.kind == "Global"
            or (self.kind == "Component" and self.target == component_id)
            or (self.kind == "Project" and self.target == project_id)
        )


@dataclass(frozen=True)
class PluginDefinition:
    name: str
    version: str
    description: str
    icon: bytes
    homepage: str
    # Golem's PluginTypeSpecificDefinition JSON: {"type": "ComponentTransformer" | ..., ...}.
    specs: dict[str, Any]
    scope: PluginScope
    owner_account_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "icon": list(self.icon),
            "homepage": self.homepage,
            "specs": dict(self.specs),
            "scope": self.scope.to_json(),
            "owner": {"accountId": self.owner_account_id},
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> PluginDefinition:
        """From stored JSON (`to_json`), validated when the plugin was registered."""
        return cls(
            data["name"], data["version"], data["description"], bytes(data["icon"]),
            data["homepage"], dict(data["specs"]), PluginScope.from_record(data["scope"]),
            data["owner"]["accountId"],
        )


def _string(data: Mapping[str, Any], key: str, problems: Problems, where: str = "") -> str:
    value = data.get(key)
    if value is None:
        problems.add(f"{where}{key}", f"Missing field: {where}{key}")
    elif not isinstance(value, str):
        problems.add(f"{where}{key}", f"Invalid field {where}{key}: expected a string")
    else:
        return value
    return ""


def _optional_string(
    data: Mapping[str, Any], key: str, problems: Problems, where: str
) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        problems.add(f"{where}{key}", f"Invalid field {where}{key}: expected a string")
        return None
    return value


def _specs(data: object, problems: Problems) -> dict[str, Any]:
    kind = data.get("type") if isinstance(data, dict) else None
    if not isinstance(data, dict) or kind not in ("ComponentTransformer", "OplogProcessor"):
        problems.add("specs", "Invalid field specs: expected {\"type\": \"ComponentTransformer\" | "
                     "\"OplogProcessor\", ...}")
        return {}
    if kind == "ComponentTransformer":
        # Golem writes the optional fields as null when absent.
        return {
            "type": kind,
            "providedWitPackage": _optional_string(data, "providedWitPackage", problems, "specs."),
            "jsonSchema": _optional_string(data, "jsonSchema", problems, "specs."),
            "validateUrl": _string(data, "validateUrl", problems, "specs."),
            "transformUrl": _string(data, "transformUrl", problems, "specs."),
        }
    version = data.get("componentVersion")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= UINT64_MAX:
        problems.add("specs.componentVersion",
                     "Invalid field specs.componentVersion: expected an unsigned 64-bit integer")
    return {
        "type": kind,
        "componentId": _uuid(data.get("componentId"), "specs.componentId", problems),
        "componentVersion": version,
    }


def parse_definition(data: object, owner_account_id: str) -> PluginDefinition:
    """Golem's PluginDefinitionWithoutOwner JSON; every field is required."""
    if not isinstance(data, dict):
        raise InvalidRequest("Invalid body: expected a JSON object")
    problems = Problems()
    name = _string(data, "name", problems)
    version = _string(data, "version", problems)
    if name == "" and "name" in data and isinstance(data["name"], str):
        problems.add("name", "Plugin name must not be empty")
    if version == "" and "version" in data and isinstance(data["version"], str):
        problems.add("version", "Plugin version must not be empty")
    description = _string(data, "description", problems)
    homepage = _string(data, "homepage", problems)
    icon = data.get("icon")
    if not isinstance(icon, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in icon
    ):
        problems.add("icon", "Invalid field icon: expected an array of bytes (0-255)")
        icon = []
    specs = _specs(data.get("specs"), problems)
    scope = PluginScope.from_json(data.get("scope"), problems)
    problems.raise_if_any()
    return PluginDefinition(
        name, version, description, bytes(icon), homepage, specs, scope, owner_account_id
    )
