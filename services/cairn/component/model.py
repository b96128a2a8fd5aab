"""Components as the domain sees them: versions, initial files, plugin installations, JSON shapes.

A component is a sequence of immutable versions. Each version is one record: the WASM's blob key,
size and hash, the metadata extracted from it (already rendered in both API shapes, so reads never
re-parse a binary), its type, initial files and installed plugins.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cairn.runtime.errors import InvalidRequest, Problems, quote

ComponentType = Literal["Durable", "Ephemeral"]
FilePermissions = Literal["read-only", "read-write"]
COMPONENT_TYPES: tuple[ComponentType, ...] = ("Durable", "Ephemeral")
Json = dict[str, Any]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def parse_component_id(raw: str) -> str:
    """The canonical form of a component id, or a 400 naming the bad value."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidRequest.for_field(
            "componentId", f"Invalid component id: {quote(raw)!r} is not a UUID") from None


def parse_version(raw: str) -> int:
    """A version path segment: an unsigned 64-bit integer, else 400 "Invalid version"."""
    text = raw.strip()
    if not text.isdigit() or not text.isascii() or int(text) >= 2**64:
        raise InvalidRequest.for_field("version", "Invalid version")
    return int(text)


@dataclass(frozen=True, slots=True)
class InitialFile:
    """One file of the initial file system; `key` is the SHA-256 of its content."""

    key: str
    path: str
    permissions: FilePermissions

    def to_json(self) -> Json:
        return {"key": self.key, "path": self.path, "permissions": self.permissions}

    @classmethod
    def from_json(cls, data: Json) -> InitialFile:
        return cls(str(data["key"]), str(data["path"]), data["permissions"])


def parse_installation_id(raw: str) -> str:
    """The canonical form of a plugin installation id, or a 400 naming the bad value."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidRequest.for_field(
            "installationId", f"Invalid plugin installation id: {quote(raw)!r} is not a UUID"
        ) from None


def check_installation(name: str | None, version: str | None, priority: int | None) -> None:
    """A PluginInstallationCreation's fields (all three are required), or a 400 naming each
    bad one."""
    problems = Problems()
    for label, value in (("name", name), ("version", version), ("priority", priority)):
        if value is None:
            problems.add(label, f"Missing field: {label}")
    if name is not None and not name.strip():
        problems.add("name", "Plugin name must not be empty")
    if version is not None and not version.strip():
        problems.add("version", "Plugin version must not be empty")
    if priority is not None and not INT32_MIN <= priority <= INT32_MAX:
        problems.add("priority", "Plugin priority must be a 32-bit signed integer")
    problems.raise_if_any()


@dataclass(frozen=True, slots=True)
class PluginInstallation:
    """A plugin installed on a component version (Dec 2024 shape)."""

    id: str
    name: str
    version: str
    priority: int
    parameters: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "priority": self.priority,
            "parameters": dict(self.parameters),
        }

    @classmethod
    def from_json(cls, data: Json) -> PluginInstallation:
        return cls(
            str(data["id"]),
            str(data["name"]),
            str(data["version"]),
            int(data["priority"]),
            {str(k): str(v) for k, v in data["parameters"].items()},
        )


@dataclass(frozen=True, slots=True)
class ComponentVersion:
    """One immutable version of a component."""

    component_id: str
    version: int
    name: str
    project_id: str
    owner_account_id: str
    size: int
    sha256: str
    blob_key: str
    created_at: str  # RFC 3339, UTC
    component_type: ComponentType
    # Component.metadata in Golem's Dec 2024 shape: {"exports", "producers", "memories"}.
    metadata: Json
    # metadata.exports in the 2023 Template API's externally tagged shape.
    template_exports: list[Json]
    files: tuple[InitialFile, ...] = ()
    installed_plugins: tuple[PluginInstallation, ...] = ()

    def successor(self, created_at: str, **changes: Any) -> ComponentVersion:
        """The next version: everything carried over unless `changes` says otherwise."""
        return replace(self, version=self.version + 1, created_at=created_at, **changes)

    # -- storage ---------------------------------------------------------------------------

    def to_record(self) -> str:
        return json.dumps(
            {
                "id": self.component_id,
                "version": self.version,
                "name": self.name,
                "project": self.project_id,
                "owner": self.owner_account_id,
                "size": self.size,
                "sha256": self.sha256,
                "blob": self.blob_key,
                "created": self.created_at,
                "type": self.component_type,
                "metadata": self.metadata,
                "templateExports": self.template_exports,
                "files": [f.to_json() for f in self.files],
                "plugins": [p.to_json() for p in self.installed_plugins],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_record(cls, raw: str | bytes) -> ComponentVersion:
        data = json.loads(raw)
        return cls(
            component_id=data["id"],
            version=int(data["version"]),
            name=data["name"],
            project_id=data["project"],
            owner_account_id=data["owner"],
            size=int(data["size"]),
            sha256=data["sha256"],
            blob_key=data["blob"],
            created_at=data["created"],
            component_type=data["type"],
            metadata=data["metadata"],
            template_exports=data["templateExports"],
            files=tuple(InitialFile.from_json(f) for f in data["files"]),
            installed_plugins=tuple(PluginInstallation.from_json(p) for p in data["plugins"]),
        )

    # -- API shapes ------------------------------------------------------------------------

    def to_json(self) -> Json:
        """Golem's Component JSON (Dec 2024)."""
        return {
            "versionedComponentId": {"componentId": self.component_id, "version": self.version},
            "componentName": self.name,
            "componentSize": self.size,
            "metadata": self.metadata,
            "projectId": self.project_id,
            "createdAt": self.created_at,
            "componentType": self.component_type,
            "files": [f.to_json() for f in self.files],
            "installedPlugins": [p.to_json() for p in self.installed_plugins],
        }

    def to_template_json(self) -> Json:
        """Golem's 2023 Template JSON."""
        versioned = {"rawTemplateId": self.component_id, "version": self.version}
        return {
            "versionedTemplateId": versioned,
            "userTemplateId": {"versionedComponentId": dict(versioned)},
            "protectedTemplateId": {"versionedComponentId": dict(versioned)},
            "templateName": {"value": self.name},
            "templateSize": self.size,
            "metadata": {
                "exports": self.template_exports,
                "producers": self.metadata["producers"],
            },
            "projectId": self.project_id,
        }
