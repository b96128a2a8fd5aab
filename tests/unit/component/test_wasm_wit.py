"""Exports of every valid fixture agree with what `wasm-tools component wit` printed for it.

The oracle files in `expected/wasm-tools-wit/` are WIT text. We read from them, with a small
line-based reader, (1) the exported interfaces and world-level functions, (2) each function's
signature spelled with component-model names (`[constructor]cart`, `[method]cart.add-item` with
its `self: borrow<cart>`, `[static]...`), and (3) the record/variant/enum/flags definitions.
Our metadata is rendered the same way (`wit_signature`) and compared: same exports, same
signatures (as multisets, since wit orders resource functions before free ones), and every named
record/variant/enum/flags type used by an exported function has the oracle's definition.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cairn.component.wasm import (
    EnumType,
    ExportedFunction,
    ExportedInstance,
    FlagsType,
    ListType,
    OptionType,
    RecordType,
    ResultType,
    TupleType,
    VariantType,
    WitType,
    analyse_component,
    wit_signature,
    wit_type,
)

# `async func` is compared as `func`: the metadata model has no async flag.
FUNCTION_LINE = re.compile(
    r"^(?P<name>%?[\w-]+): (?P<static>static )?(?:async )?func\((?P<rest>.*);$"
)
WORLD_FUNCTION_LINE = re.compile(r"^export (?P<name>%?[\w-]+): (?:async )?func\((?P<rest>.*);$")
ALIAS_LINE = re.compile(r"^type (?P<name>%?[\w-]+) = (?P<target>%?[\w-]+);$")
USE_LINE = re.compile(r"^use [^{]+\.\{(?P<items>.*)\};$")
BLOCK_START = re.compile(r"^(?P<kind>record|variant|enum|flags) (?P<name>%?[\w-]+) \{$")


def unescape(text: str) -> str:
    """WIT escapes keywords used as identifiers with `%` (e.g. `%type`)."""
    return re.sub(r"%(?=[a-z])", "", text)


@dataclass
class WitDocument:
    """What one `wasm-tools component wit` output says about the root world's exports."""

    exported_interfaces: list[str] = field(default_factory=list)
    world_functions: list[str] = field(default_factory=list)
    interface_functions: dict[str, list[str]] = field(default_factory=dict)
    # definitions by type name, from every interface and the world (a name may repeat)
    definitions: dict[str, set[str]] = field(default_factory=dict)
    # `type a = b;` aliases by name (a name may repeat)
    aliases: dict[str, set[str]] = field(default_factory=dict)

    def definitions_of(self, name: str, depth: int = 0) -> set[str]:
        """The definitions `name` may stand for, following aliases (`type a = b;`)."""
        found = set(self.definitions.get(name, set()))
        if depth < 10:
            for target in self.aliases.get(name, set()):
                for definition in self.definitions_of(target, depth + 1):
                    kind, _, rest = definition.split(" ", 2)
                    found.add(f"{kind} {name} {rest}")
        return found


def parse_wit(text: str) -> WitDocument:
    document = WitDocument()
    package = ""
    scope: list[tuple[str, str]] = []  # ("package"|"world"|"interface"|"resource"|"type", name)
    block: list[str] | None = None
    block_header = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("//"):
            continue
        if block is not None:
            if line == "}":
                definition = f"{block_header} {{ {', '.join(block)} }}"
                name = unescape(block_header.split(" ", 1)[1])
                document.definitions.setdefault(name, set()).add(unescape(definition))
                block = None
            else:
                block.append(line.rstrip(","))
            continue
        if line.startswith("package ") and line.endswith("{"):
            package = line.removeprefix("package ").removesuffix("{").strip()
            scope.append(("package", package))
        elif line.startswith("world ") and line.endswith("{"):
            scope.append(("world", line.split()[1]))
        elif line.startswith("interface ") and line.endswith("{"):
            name, _, version = package.partition("@")
            interface = f"{name}/{line.split()[1]}" + (f"@{version}" if version else "")
            scope.append(("interface", interface))
            document.interface_functions.setdefault(interface, [])
        elif line.startswith("resource ") and line.endswith("{"):
            scope.append(("resource", unescape(line.split()[1])))
        elif (match := USE_LINE.match(line)) is not None:
            # `use types.{point as pt}` makes `pt` another name for `point`.
            for item in match["items"].split(","):
                original, _, renamed = item.strip().partition(" as ")
                if renamed:
                    document.aliases.setdefault(unescape(renamed), set()).add(unescape(original))
        elif (match := ALIAS_LINE.match(line)) is not None:
            document.aliases.setdefault(unescape(match["name"]), set()).add(
                unescape(match["target"])
            )
        elif (match := BLOCK_START.match(line)) is not None:
            block = []
            block_header = f"{match['kind']} {match['name']}"
        elif line == "}":
            scope.pop()
        elif scope and scope[-1][0] == "world":
            if (match := WORLD_FUNCTION_LINE.match(line)) is not None:
                document.world_functions.append(unescape(f"{match['name']}: func({match['rest']}"))
            elif line.startswith("export ") and line.endswith(";"):
                document.exported_interfaces.append(line.removeprefix("export ").rstrip(";"))
        elif scope and scope[-1][0] in ("interface", "resource"):
            interface = next(name for kind, name in reversed(scope) if kind == "interface")
            signature = function_signature(line, scope[-1])
            if signature is not None:
                document.interface_functions[interface].append(unescape(signature))
    return document


def function_signature(line: str, scope: tuple[str, str]) -> str | None:
    """A function line of an interface or resource block, with component-model naming."""
    kind, resource = scope
    if kind == "resource" and line.startswith("constructor("):
        params = line.removeprefix("constructor(").removesuffix(");")
        return f"[constructor]{resource}: func({params}) -> {resource}"
    match = FUNCTION_LINE.match(line)
    if match is None:
        return None
    name, rest = match["name"], match["rest"]
    if kind == "interface":
        return f"{name}: func({rest}"
    if match["static"]:
        return f"[static]{resource}.{name}: func({rest}"
    self_param = f"self: borrow<{resource}>" + ("" if rest.startswith(")") else ", ")
    return f"[method]{resource}.{name}: func({self_param}{rest}"


def definition(typ: WitType) -> str | None:
    """Our rendering of a named record/variant/enum/flags type's definition."""
    if isinstance(typ, RecordType):
        members = [f"{f.name}: {wit_type(f.typ)}" for f in typ.fields]
        kind = "record"
    elif isinstance(typ, VariantType):
        members = [c.name if c.typ is None else f"{c.name}({wit_type(c.typ)})" for c in typ.cases]
        kind = "variant"
    elif isinstance(typ, EnumType):
        members, kind = list(typ.cases), "enum"
    elif isinstance(typ, FlagsType):
        members, kind = list(typ.names), "flags"
    else:
        return None
    return f"{kind} {typ.name} {{ {', '.join(members)} }}"


def named_definitions(typ: WitType, found: dict[str, str]) -> None:
    """Collects the definitions of every named record/variant/enum/flags reachable from typ."""
    if typ.name is not None and typ.name not in found:
        rendered = definition(typ)
        if rendered is not None:
            found[typ.name] = rendered
    children: list[WitType | None] = []
    if isinstance(typ, ListType | OptionType):
        children = [typ.inner]
    elif isinstance(typ, ResultType):
        children = [typ.ok, typ.err]
    elif isinstance(typ, TupleType):
        children = list(typ.items)
    elif isinstance(typ, RecordType):
        children = [f.typ for f in typ.fields]
    elif isinstance(typ, VariantType):
        children = [c.typ for c in typ.cases]
    for child in children:
        if child is not None:
            named_definitions(child, found)


def function_definitions(functions: list[ExportedFunction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for function in functions:
        for param in function.parameters:
            named_definitions(param.typ, found)
        for result in function.results:
            named_definitions(result.typ, found)
    return found


def valid_fixtures(shared_fixtures: Path) -> list[Path]:
    wasm_dir = shared_fixtures / "golem" / "wasm"
    return sorted(p for p in wasm_dir.glob("*.wasm") if not p.name.startswith("negative_"))


def oracle_for(shared_fixtures: Path, wasm: Path) -> WitDocument:
    wit = shared_fixtures / "golem" / "expected" / "wasm-tools-wit" / f"{wasm.stem}.wit"
    return parse_wit(wit.read_text())


def mismatches(wasm: Path, oracle: WitDocument) -> list[str]:
    """Every way our metadata for `wasm` disagrees with the oracle (empty when they agree)."""
    metadata = analyse_component(wasm.read_bytes())
    problems: list[str] = []
    instances = [e for e in metadata.exports if isinstance(e, ExportedInstance)]
    functions = [e for e in metadata.exports if isinstance(e, ExportedFunction)]
    if not metadata.exports:
        problems.append("no exports found")
    if [i.name for i in instances] != oracle.exported_interfaces:
        problems.append(f"interfaces {[i.name for i in instances]} != {oracle.exported_interfaces}")
    if [wit_signature(f) for f in functions] != oracle.world_functions:
        problems.append(f"world functions {[wit_signature(f) for f in functions]}")
    used_functions = list(functions)
    for instance in instances:
        ours = Counter(wit_signature(f) for f in instance.functions)
        theirs = Counter(oracle.interface_functions.get(instance.name, []))
        if ours != theirs:
            problems.append(f"{instance.name}: ours-only {ours - theirs}, wit-only {theirs - ours}")
        used_functions.extend(instance.functions)
    for type_name, rendered in function_definitions(used_functions).items():
        if rendered not in oracle.definitions_of(type_name):
            problems.append(f"type {type_name}: {rendered}")
    return [f"{wasm.name}: {problem}" for problem in problems]


def test_every_valid_fixture_has_an_oracle(shared_fixtures: Path) -> None:
    fixtures = valid_fixtures(shared_fixtures)
    assert len(fixtures) == 21
    for wasm in fixtures:
        assert (
            oracle_for(shared_fixtures, wasm).exported_interfaces
            or oracle_for(shared_fixtures, wasm).world_functions
        ), wasm.name


def test_exports_match_wasm_tools_wit_for_every_valid_fixture(shared_fixtures: Path) -> None:
    problems = [
        problem
        for wasm in valid_fixtures(shared_fixtures)
        for problem in mismatches(wasm, oracle_for(shared_fixtures, wasm))
    ]
    assert problems == []


def test_comparison_notices_a_difference(shared_fixtures: Path) -> None:
    """The comparison is not vacuous: a doctored oracle is caught."""
    wasm = shared_fixtures / "golem" / "wasm" / "wasmast_shopping-cart-resource.wasm"
    oracle = oracle_for(shared_fixtures, wasm)
    oracle.interface_functions["golem:it/api"][0] = "[constructor]cart: func() -> cart"
    oracle.definitions["product-item"] = {"record product-item { name: string }"}
    problems = mismatches(wasm, oracle)
    assert len(problems) == 2
    assert "[constructor]cart" in problems[0]
    assert "product-item" in problems[1]


def test_wit_reader_understands_resources() -> None:
    """The oracle reader itself: resource blocks become component-model function names."""
    text = """package root:component;

world root {
  export golem:it/api@1.2.3;
}
package golem:it@1.2.3 {
  interface api {
    record item {
      %type: string,
    }

    resource cart {
      constructor(user-id: string);
      add: func(item: item);
      make: static func() -> cart;
    }

    total: func() -> u32;
  }
}
"""
    document = parse_wit(text)
    assert document.exported_interfaces == ["golem:it/api@1.2.3"]
    assert document.interface_functions["golem:it/api@1.2.3"] == [
        "[constructor]cart: func(user-id: string) -> cart",
        "[method]cart.add: func(self: borrow<cart>, item: item)",
        "[static]cart.make: func() -> cart",
        "total: func() -> u32",
    ]
    assert document.definitions["item"] == {"record item { type: string }"}


DATA = Path(__file__).parent / "data"


def test_generated_kitchen_sink_component_matches_wasm_tools_wit() -> None:
    """Static functions, own/borrow, shared resources, flags, enums, aliases, world types."""
    wasm = DATA / "kitchen.wasm"
    oracle = parse_wit((DATA / "kitchen.wasm-tools.wit").read_text())
    assert mismatches(wasm, oracle) == []
    assert sum(len(functions) for functions in oracle.interface_functions.values()) == 13
    assert oracle.world_functions == [
        "top: func(x: list<u8>) -> string",
        "use-local: func(r: local-rec) -> local-rec",
    ]


def test_generated_kitchen_sink_resources_keep_their_identity_across_interfaces() -> None:
    metadata = analyse_component((DATA / "kitchen.wasm").read_bytes())
    instances = {e.name: e for e in metadata.exports if isinstance(e, ExportedInstance)}
    merge = instances["test:kitchen/types@0.3.1"].functions[2]
    take = instances["test:kitchen/other@0.3.1"].functions[0]
    open_ = instances["test:kitchen/api@0.3.1"].functions[1]
    blob = merge.results[0].typ
    assert wit_signature(merge) == "[static]blob.merge: func(a: borrow<blob>, b: blob) -> blob"
    assert take.parameters[0].typ == blob
    assert isinstance(open_.results[0].typ, ResultType)
    assert open_.results[0].typ.ok == blob
    assert open_.parameters[0].typ != blob  # the session resource


def test_generated_edge_cases_component_matches_wasm_tools_wit() -> None:
    """`use ... as` renames, alias chains, a resource alias, a types-only interface."""
    wasm = DATA / "edge.wasm"
    oracle = parse_wit((DATA / "edge.wasm-tools.wit").read_text())
    assert mismatches(wasm, oracle) == []
    metadata = analyse_component(wasm.read_bytes())
    only_types = next(e for e in metadata.exports if e.name == "test:edge/only-types@1.0.0")
    assert only_types == ExportedInstance("test:edge/only-types@1.0.0", ())


def test_generated_async_component_skips_the_interface_using_streams() -> None:
    wasm = DATA / "asyncy.wasm"
    oracle = parse_wit((DATA / "asyncy.wasm-tools.wit").read_text())
    metadata = analyse_component(wasm.read_bytes())
    assert [e.name for e in metadata.exports] == ["test:asyncy/plain"]
    assert metadata.warnings == (
        "export 'test:asyncy/streams' was skipped: it uses the type 'stream', "
        "which component metadata cannot represent",
    )
    (plain,) = metadata.exports
    assert isinstance(plain, ExportedInstance)
    assert sorted(wit_signature(f) for f in plain.functions) == sorted(
        oracle.interface_functions["test:asyncy/plain"]
    )
