"""Typed protobuf messages for native gRPC clients, built from the stored version records.

REST clients get Golem's JSON straight from the records (model.py); gRPC clients get the same
data as `cairn.component.v1` messages, converted here.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from cairn.component.model import (
    ComponentType,
    ComponentVersion,
    FilePermissions,
    PluginInstallation,
)
from cairn.component.v1 import component_service_pb2 as pb
from cairn.runtime.errors import InvalidRequest
from cairn.runtime.timefmt import parse_rfc3339

Json = dict[str, Any]

_PRIMITIVES = {
    "Bool": pb.PRIMITIVE_TYPE_BOOL,
    "S8": pb.PRIMITIVE_TYPE_S8,
    "U8": pb.PRIMITIVE_TYPE_U8,
    "S16": pb.PRIMITIVE_TYPE_S16,
    "U16": pb.PRIMITIVE_TYPE_U16,
    "S32": pb.PRIMITIVE_TYPE_S32,
    "U32": pb.PRIMITIVE_TYPE_U32,
    "S64": pb.PRIMITIVE_TYPE_S64,
    "U64": pb.PRIMITIVE_TYPE_U64,
    "F32": pb.PRIMITIVE_TYPE_F32,
    "F64": pb.PRIMITIVE_TYPE_F64,
    "Chr": pb.PRIMITIVE_TYPE_CHR,
    "Str": pb.PRIMITIVE_TYPE_STR,
}
_COMPONENT_TYPES: dict[ComponentType, Any] = {
    "Durable": pb.COMPONENT_TYPE_DURABLE,
    "Ephemeral": pb.COMPONENT_TYPE_EPHEMERAL,
}
_PERMISSIONS: dict[FilePermissions, Any] = {
    "read-only": pb.FILE_PERMISSIONS_READ_ONLY,
    "read-write": pb.FILE_PERMISSIONS_READ_WRITE,
}


def component_type_from_pb(value: int) -> ComponentType | None:
    """None for UNSPECIFIED (the caller's default applies)."""
    for name, number in _COMPONENT_TYPES.items():
        if number == value:
            return name
    if value != pb.COMPONENT_TYPE_UNSPECIFIED:
        raise InvalidRequest(f"Invalid component type: {value}")
    return None


def permissions_from_pb(entries: Any) -> dict[str, FilePermissions]:
    """`files_permissions` of a native header, as a path -> permissions mapping."""
    result: dict[str, FilePermissions] = {}
    for entry in entries:
        matches = [name for name, number in _PERMISSIONS.items() if number == entry.permissions]
        if not matches:
            raise InvalidRequest(f"Invalid permissions for {entry.path}: unspecified")
        result[entry.path] = matches[0]
    return result


def typ_to_pb(typ: Json) -> pb.WitType:
    """A Golem `typ` object ({"type": "Record", ...}) as a WitType message."""
    tag = typ["type"]
    if tag in _PRIMITIVES:
        return pb.WitType(primitive=_PRIMITIVES[tag])
    if tag == "List":
        return pb.WitType(list=typ_to_pb(typ["inner"]))
    if tag == "Option":
        return pb.WitType(option=typ_to_pb(typ["inner"]))
    if tag == "Result":
        result = pb.ResultType()
        if typ["ok"] is not None:
            result.ok.CopyFrom(typ_to_pb(typ["ok"]))
        if typ["err"] is not None:
            result.err.CopyFrom(typ_to_pb(typ["err"]))
        return pb.WitType(result=result)
    if tag == "Tuple":
        return pb.WitType(tuple=pb.TupleType(items=[typ_to_pb(i) for i in typ["items"]]))
    if tag == "Record":
        fields = [pb.NamedType(name=f["name"], typ=typ_to_pb(f["typ"])) for f in typ["fields"]]
        return pb.WitType(record=pb.RecordType(fields=fields))
    if tag == "Variant":
        cases = [
            pb.VariantCase(name=c["name"])
            if c["typ"] is None
            else pb.VariantCase(name=c["name"], typ=typ_to_pb(c["typ"]))
            for c in typ["cases"]
        ]
        return pb.WitType(variant=pb.VariantType(cases=cases))
    if tag == "Enum":
        return pb.WitType(enum=pb.EnumType(cases=typ["cases"]))
    if tag == "Flags":
        return pb.WitType(flags=pb.FlagsType(names=typ["names"]))
    if tag == "Handle":
        return pb.WitType(handle=pb.HandleType(resource_id=typ["resource_id"], mode=typ["mode"]))
    raise ValueError(f"unknown WIT type tag {tag!r}")


def function_to_pb(function: Json) -> pb.ExportedFunction:
    return pb.ExportedFunction(
        name=function["name"],
        parameters=[
            pb.FunctionParameter(name=p["name"], typ=typ_to_pb(p["typ"]))
            for p in function["parameters"]
        ],
        results=[
            pb.FunctionResult(typ=typ_to_pb(r["typ"]))
            if r["name"] is None
            else pb.FunctionResult(name=r["name"], typ=typ_to_pb(r["typ"]))
            for r in function["results"]
        ],
    )


def metadata_to_pb(metadata: Json) -> pb.ComponentMetadata:
    exports = []
    for export in metadata["exports"]:
        if export["type"] == "Instance":
            instance = pb.ExportedInstance(
                name=export["name"], functions=[function_to_pb(f) for f in export["functions"]]
            )
            exports.append(pb.Export(instance=instance))
        else:
            exports.append(pb.Export(function=function_to_pb(export)))
    producers = [
        pb.Producers(
            fields=[
                pb.ProducerField(
                    name=f["name"],
                    values=[pb.ProducerVersion(name=v["name"], version=v["version"])
                            for v in f["values"]],
                )
                for f in p["fields"]
            ]
        )
        for p in metadata["producers"]
    ]
    memories = [
        pb.LinearMemory(initial=m["initial"])
        if m["maximum"] is None
        else pb.LinearMemory(initial=m["initial"], maximum=m["maximum"])
        for m in metadata["memories"]
    ]
    return pb.ComponentMetadata(exports=exports, producers=producers, memories=memories)


def plugin_to_pb(plugin: PluginInstallation) -> pb.PluginInstallation:
    return pb.PluginInstallation(
        id=plugin.id,
        name=plugin.name,
        version=plugin.version,
        priority=plugin.priority,
        parameters=plugin.parameters,
    )


def component_to_pb(version: ComponentVersion) -> pb.Component:
    created = Timestamp()
    created.FromDatetime(parse_rfc3339(version.created_at))
    return pb.Component(
        component_id=version.component_id,
        version=version.version,
        component_name=version.name,
        component_size=version.size,
        metadata=metadata_to_pb(version.metadata),
        project_id=version.project_id,
        created_at=created,
        component_type=_COMPONENT_TYPES[version.component_type],
        files=[
            pb.InitialComponentFile(
                key=f.key, path=f.path, permissions=_PERMISSIONS[f.permissions]
            )
            for f in version.files
        ],
        installed_plugins=[plugin_to_pb(p) for p in version.installed_plugins],
        sha256=version.sha256,
    )
