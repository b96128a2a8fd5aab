"""JSON (and WIT-like text) renderings of component metadata.

* `exports_to_json` / `metadata_to_json`: Golem's Dec 2024 Component API shape, internally
  tagged by `"type"`, function `results` lists, optional fields as `null`, plus the
  `[drop]<resource>` function Golem's REST layer adds for each `[constructor]<resource>`.
* `template_exports_to_json`: the 2023 Template API's externally tagged shape (see
  docs/wasm-metadata.md for the choices made where that format is poorly documented).
* `wit_type` / `wit_signature`: WIT-like text, used to compare with `wasm-tools component wit`.

Everything returned is plain dicts/lists/str/int/None, ready for `json.dumps`.
"""

from __future__ import annotations

from typing import Any

from .model import (
    ComponentMetadata,
    EnumType,
    ExportedFunction,
    ExportedInstance,
    FlagsType,
    HandleType,
    ListType,
    OptionType,
    PrimitiveType,
    RecordType,
    ResultType,
    TupleType,
    VariantType,
    WitType,
)

Json = dict[str, Any]

PRIMITIVE_TAGS = {
    "bool": "Bool",
    "s8": "S8",
    "u8": "U8",
    "s16": "S16",
    "u16": "U16",
    "s32": "S32",
    "u32": "U32",
    "s64": "S64",
    "u64": "U64",
    "f32": "F32",
    "f64": "F64",
    "char": "Chr",
    "string": "Str",
}


# -- Dec 2024 Component API shape -------------------------------------------------------------


def type_to_json(typ: WitType) -> Json:
    """A `typ` object: `{"type": "Record", "fields": [...]}` and so on."""
    if isinstance(typ, PrimitiveType):
        return {"type": PRIMITIVE_TAGS[typ.kind]}
    if isinstance(typ, ListType):
        return {"type": "List", "inner": type_to_json(typ.inner)}
    if isinstance(typ, OptionType):
        return {"type": "Option", "inner": type_to_json(typ.inner)}
    if isinstance(typ, ResultType):
        return {
            "type": "Result",
            "ok": None if typ.ok is None else type_to_json(typ.ok),
            "err": None if typ.err is None else type_to_json(typ.err),
        }
    if isinstance(typ, TupleType):
        return {"type": "Tuple", "items": [type_to_json(item) for item in typ.items]}
    if isinstance(typ, RecordType):
        return {
            "type": "Record",
            "fields": [{"name": f.name, "typ": type_to_json(f.typ)} for f in typ.fields],
        }
    if isinstance(typ, VariantType):
        return {
            "type": "Variant",
            "cases": [
                {"name": c.name, "typ": None if c.typ is None else type_to_json(c.typ)}
                for c in typ.cases
            ],
        }
    if isinstance(typ, EnumType):
        return {"type": "Enum", "cases": list(typ.cases)}
    if isinstance(typ, FlagsType):
        return {"type": "Flags", "names": list(typ.names)}
    return {"type": "Handle", "resource_id": typ.resource_id, "mode": typ.mode}


def function_to_json(function: ExportedFunction) -> Json:
    return {
        "name": function.name,
        "parameters": [{"name": p.name, "typ": type_to_json(p.typ)} for p in function.parameters],
        "results": [{"name": r.name, "typ": type_to_json(r.typ)} for r in function.results],
    }


def drop_function_json(constructor: ExportedFunction) -> Json | None:
    """Golem's `[drop]<resource>` for a `[constructor]<resource>`: takes the owned handle."""
    if not constructor.name.startswith("[constructor]") or len(constructor.results) != 1:
        return None
    return {
        "name": "[drop]" + constructor.name.removeprefix("[constructor]"),
        "parameters": [{"name": "self", "typ": type_to_json(constructor.results[0].typ)}],
        "results": [],
    }


def drops_for(functions: tuple[ExportedFunction, ...]) -> list[Json]:
    """The `[drop]` functions for these functions' constructors, in constructor order."""
    return [d for d in map(drop_function_json, functions) if d is not None]


def exports_to_json(metadata: ComponentMetadata) -> list[Json]:
    """`metadata.exports` as the Component API returns it (with `[drop]` functions).

    Placement follows Golem's `add_resource_drops`: an instance's drops come after all its
    functions; drops of top-level constructors come after all exports.
    """
    rendered: list[Json] = []
    top_level_constructors: list[ExportedFunction] = []
    for export in metadata.exports:
        if isinstance(export, ExportedInstance):
            functions = [function_to_json(f) for f in export.functions]
            rendered.append(
                {
                    "type": "Instance",
                    "name": export.name,
                    "functions": functions + drops_for(export.functions),
                }
            )
        else:
            rendered.append({"type": "Function", **function_to_json(export)})
            top_level_constructors.append(export)
    rendered.extend({"type": "Function", **d} for d in drops_for(tuple(top_level_constructors)))
    return rendered


def metadata_to_json(metadata: ComponentMetadata) -> Json:
    """`{"exports": [...], "producers": [...], "memories": [...]}` (Component.metadata)."""
    return {
        "exports": exports_to_json(metadata),
        "producers": [
            {
                "fields": [
                    {
                        "name": field.name,
                        "values": [{"name": v.name, "version": v.version} for v in field.values],
                    }
                    for field in producers.fields
                ]
            }
            for producers in metadata.producers
        ],
        "memories": [
            {"initial": memory.initial, "maximum": memory.maximum} for memory in metadata.memories
        ],
    }


# -- 2023 Template API shape ------------------------------------------------------------------


def template_type_to_json(typ: WitType) -> Json:
    """Externally tagged: `{"Record": {"fields": [{"name": .., "tpe": ..}]}}`, `{"Str": {}}`."""
    if isinstance(typ, PrimitiveType):
        return {PRIMITIVE_TAGS[typ.kind]: {}}
    if isinstance(typ, ListType | OptionType):
        tag = "List" if isinstance(typ, ListType) else "Option"
        return {tag: {"inner": template_type_to_json(typ.inner)}}
    if isinstance(typ, ResultType):
        return {
            "Result": {
                "ok": None if typ.ok is None else template_type_to_json(typ.ok),
                "err": None if typ.err is None else template_type_to_json(typ.err),
            }
        }
    if isinstance(typ, TupleType):
        return {"Tuple": {"items": [template_type_to_json(item) for item in typ.items]}}
    if isinstance(typ, RecordType):
        return {
            "Record": {
                "fields": [
                    {"name": f.name, "tpe": template_type_to_json(f.typ)} for f in typ.fields
                ]
            }
        }
    if isinstance(typ, VariantType):
        return {
            "Variant": {
                "cases": [
                    {"name": c.name, "tpe": None if c.typ is None else template_type_to_json(c.typ)}
                    for c in typ.cases
                ]
            }
        }
    if isinstance(typ, EnumType):
        return {"Enum": {"cases": list(typ.cases)}}
    if isinstance(typ, FlagsType):
        return {"Flags": {"names": list(typ.names)}}
    return {"Handle": {"resource_id": typ.resource_id, "mode": typ.mode}}


def template_function_to_json(function: ExportedFunction) -> Json:
    return {
        "name": function.name,
        "parameters": [
            {"name": p.name, "tpe": template_type_to_json(p.typ)} for p in function.parameters
        ],
        "results": [
            {"name": r.name, "tpe": template_type_to_json(r.typ)} for r in function.results
        ],
    }


def template_exports_to_json(metadata: ComponentMetadata) -> list[Json]:
    """`metadata.exports` of the 2023 Template API: `[{"Instance": {...}}, {"Function": {...}}]`.

    No `[drop]` functions: the 2023 API predates resources.
    """
    rendered: list[Json] = []
    for export in metadata.exports:
        if isinstance(export, ExportedInstance):
            rendered.append(
                {
                    "Instance": {
                        "name": export.name,
                        "functions": [template_function_to_json(f) for f in export.functions],
                    }
                }
            )
        else:
            rendered.append({"Function": template_function_to_json(export)})
    return rendered


# -- WIT-like text ----------------------------------------------------------------------------


def wit_type(typ: WitType) -> str:
    """How `wasm-tools component wit` would spell a type reference (named types by name)."""
    if isinstance(typ, HandleType):
        resource = typ.resource_name or f"resource-{typ.resource_id}"
        return resource if typ.mode == "Owned" else f"borrow<{resource}>"
    if typ.name is not None:
        return typ.name
    if isinstance(typ, PrimitiveType):
        return typ.kind
    if isinstance(typ, ListType):
        return f"list<{wit_type(typ.inner)}>"
    if isinstance(typ, OptionType):
        return f"option<{wit_type(typ.inner)}>"
    if isinstance(typ, ResultType):
        if typ.ok is None and typ.err is None:
            return "result"
        if typ.err is None:
            return f"result<{wit_type(typ.ok)}>" if typ.ok is not None else "result"
        ok = "_" if typ.ok is None else wit_type(typ.ok)
        return f"result<{ok}, {wit_type(typ.err)}>"
    if isinstance(typ, TupleType):
        return f"tuple<{', '.join(wit_type(item) for item in typ.items)}>"
    # Anonymous records/variants/enums/flags cannot be written in WIT; show their structure.
    if isinstance(typ, RecordType):
        fields = ", ".join(f"{f.name}: {wit_type(f.typ)}" for f in typ.fields)
        return f"record {{ {fields} }}"
    if isinstance(typ, VariantType):
        cases = ", ".join(
            c.name if c.typ is None else f"{c.name}({wit_type(c.typ)})" for c in typ.cases
        )
        return f"variant {{ {cases} }}"
    if isinstance(typ, EnumType):
        return f"enum {{ {', '.join(typ.cases)} }}"
    return f"flags {{ {', '.join(typ.names)} }}"


def wit_signature(function: ExportedFunction) -> str:
    """`name: func(a: T, b: U) -> R`, with component-model names for resource functions."""
    params = ", ".join(f"{p.name}: {wit_type(p.typ)}" for p in function.parameters)
    signature = f"{function.name}: func({params})"
    results = function.results
    if len(results) == 1 and results[0].name is None:
        signature += f" -> {wit_type(results[0].typ)}"
    elif results:
        named = ", ".join(f"{r.name}: {wit_type(r.typ)}" for r in results)
        signature += f" -> ({named})"
    return signature
