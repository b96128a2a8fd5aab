"""Our metadata JSON equals what Golem's own analyser asserts for its test components.

`expected/exports-json-2024-12/<name>.*.json` are golem-wasm-ast's test expectations (Dec 2024)
for `wasm/wasmast_<name>.wasm`, in the Component API's REST shape but without the `[drop]`
functions the REST layer adds. `expected/exports-json-2025-08/` holds the 2025 shape, whose
types carry WIT `name`s: we use it to check the names we recover.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cairn.component.wasm import (
    ComponentMetadata,
    ExportedFunction,
    ExportedInstance,
    HandleType,
    ListType,
    OptionType,
    PrimitiveType,
    RecordType,
    ResultType,
    TupleType,
    VariantType,
    WitType,
    analyse_component,
    exports_to_json,
    metadata_to_json,
)
from cairn.component.wasm.render import type_to_json


def expectations(shared_fixtures: Path, era: str, kind: str) -> list[tuple[Path, Any]]:
    """(wasm path, expected JSON) for every `<name>.<kind>.json` of an era."""
    expected_dir = shared_fixtures / "golem" / "expected" / f"exports-json-{era}"
    pairs = []
    for path in sorted(expected_dir.glob(f"*.{kind}.json")):
        name = path.name.removesuffix(f".{kind}.json")
        wasm = shared_fixtures / "golem" / "wasm" / f"wasmast_{name}.wasm"
        pairs.append((wasm, json.loads(path.read_text())))
    return pairs


def analyse(wasm: Path) -> ComponentMetadata:
    return analyse_component(wasm.read_bytes())


def without_drops(exports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stripped = []
    for export in exports:
        if export["name"].startswith("[drop]"):
            continue
        if export["type"] == "Instance":
            functions = [f for f in export["functions"] if not f["name"].startswith("[drop]")]
            export = {**export, "functions": functions}
        stripped.append(export)
    return stripped


def test_exports_equal_golem_2024_expectations(shared_fixtures: Path) -> None:
    pairs = expectations(shared_fixtures, "2024-12", "exports")
    assert len(pairs) == 5
    for wasm, expected in pairs:
        assert without_drops(exports_to_json(analyse(wasm))) == expected, wasm.name


def test_drop_functions_come_after_the_instances_functions(shared_fixtures: Path) -> None:
    """As Golem's `add_resource_drops` places them: appended to the instance's function list."""
    wasm = shared_fixtures / "golem" / "wasm" / "wasmast_shopping-cart-resource.wasm"
    (api,) = exports_to_json(analyse(wasm))
    names = [f["name"] for f in api["functions"]]
    assert names[:2] == ["[constructor]cart", "[method]cart.add-item"]
    assert names[-1] == "[drop]cart" and names.count("[drop]cart") == 1
    drop = api["functions"][-1]
    owned_cart = {"type": "Handle", "resource_id": 0, "mode": "Owned"}
    assert api["functions"][0]["results"] == [{"name": None, "typ": owned_cart}]
    assert drop == {
        "name": "[drop]cart",
        "parameters": [{"name": "self", "typ": owned_cart}],
        "results": [],
    }


def test_components_without_resources_get_no_drop_functions(shared_fixtures: Path) -> None:
    for wasm, _ in expectations(shared_fixtures, "2024-12", "exports"):
        rendered = json.dumps(exports_to_json(analyse(wasm)))
        assert ("[drop]" in rendered) == ("[constructor]" in rendered), wasm.name


def test_memories_equal_golem_expectations(shared_fixtures: Path) -> None:
    pairs = expectations(shared_fixtures, "2024-12", "memories")
    assert len(pairs) == 3
    for wasm, expected in pairs:
        assert metadata_to_json(analyse(wasm))["memories"] == expected, wasm.name


def test_producers_equal_golem_expectations_in_golem_order(shared_fixtures: Path) -> None:
    """Golem 2024 lists the component's own producers first, then each nested module's."""
    ((wasm, expected),) = expectations(shared_fixtures, "2024-12", "producers")
    producers = metadata_to_json(analyse(wasm))["producers"]
    assert producers == expected
    assert producers[0]["fields"][0]["values"][1] == {
        "name": "cargo-component",
        "version": "0.7.0 (wasi:ab5a448)",
    }


def test_metadata_json_shape(shared_fixtures: Path) -> None:
    wasm = shared_fixtures / "golem" / "wasm" / "wasmast_shopping-cart.wasm"
    metadata = metadata_to_json(analyse(wasm))
    assert list(metadata) == ["exports", "producers", "memories"]
    assert list(metadata["exports"][0]) == ["type", "name", "functions"]
    assert list(metadata["exports"][0]["functions"][0]) == ["name", "parameters", "results"]
    assert metadata["memories"] == [{"initial": 1114112, "maximum": None}]
    assert json.loads(json.dumps(metadata)) == metadata


def test_world_level_functions_render_as_function_exports(shared_fixtures: Path) -> None:
    wasm = shared_fixtures / "golem" / "wasm" / "wasmast_caller_composed.wasm"
    exports = exports_to_json(analyse(wasm))
    assert [e["type"] for e in exports] == ["Function"] * 6
    assert list(exports[0]) == ["type", "name", "parameters", "results"]


def type_2025(typ: WitType) -> dict[str, Any]:
    """Golem's Aug 2025 `typ`: the 2024 object plus `name` on composite types."""
    rendered = type_to_json(typ)
    if isinstance(typ, PrimitiveType):
        return rendered
    if isinstance(typ, ListType | OptionType):
        rendered["inner"] = type_2025(typ.inner)
    elif isinstance(typ, ResultType):
        rendered["ok"] = None if typ.ok is None else type_2025(typ.ok)
        rendered["err"] = None if typ.err is None else type_2025(typ.err)
    elif isinstance(typ, TupleType):
        rendered["items"] = [type_2025(item) for item in typ.items]
    elif isinstance(typ, RecordType):
        rendered["fields"] = [{"name": f.name, "typ": type_2025(f.typ)} for f in typ.fields]
    elif isinstance(typ, VariantType):
        rendered["cases"] = [
            {"name": c.name, "typ": None if c.typ is None else type_2025(c.typ)} for c in typ.cases
        ]
    # Golem did not name handles yet in Aug 2025.
    rendered["name"] = None if isinstance(typ, HandleType) else typ.name
    return rendered


def function_2025(function: ExportedFunction) -> dict[str, Any]:
    (result,) = function.results or (None,)
    return {
        "name": function.name,
        "parameters": [{"name": p.name, "typ": type_2025(p.typ)} for p in function.parameters],
        "result": None if result is None else {"typ": type_2025(result.typ)},
    }


def test_type_names_equal_golem_2025_expectations(shared_fixtures: Path) -> None:
    pairs = expectations(shared_fixtures, "2025-08", "exports")
    assert len(pairs) == 6
    for wasm, expected in pairs:
        rendered = []
        for export in analyse(wasm).exports:
            if isinstance(export, ExportedInstance):
                functions = [function_2025(f) for f in export.functions]
                rendered.append({"type": "Instance", "name": export.name, "functions": functions})
            else:
                rendered.append({"type": "Function", **function_2025(export)})
        assert rendered == expected, wasm.name
