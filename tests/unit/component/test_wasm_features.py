"""Features the fixtures do not all exercise, on small hand-encoded components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import wasm_binary_builder as wb

from cairn.component.wasm import (
    ExportedFunction,
    ExportedInstance,
    LinearMemory,
    analyse_component,
    exports_to_json,
    metadata_to_json,
    template_exports_to_json,
    wit_signature,
)


def exported_function(*definitions: bytes) -> bytes:
    """A component that imports a function of the last type given and re-exports it as `f`."""
    return wb.component(
        wb.types(*definitions),
        wb.imports(wb.import_func("f", len(definitions) - 1)),
        wb.exports(wb.export_func("f", 0)),
    )


def only_function_json(data: bytes) -> dict[str, Any]:
    (function,) = exports_to_json(analyse_component(data))
    return function


def test_primitive_types_use_golem_tags() -> None:
    names = ["bool", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64", "f32", "f64"]
    params = [(f"p-{n}", n) for n in [*names, "char", "string"]]
    function = only_function_json(exported_function(wb.func(params, "string")))
    tags = [p["typ"] for p in function["parameters"]]
    assert tags == [
        {"type": "Bool"},
        {"type": "S8"},
        {"type": "U8"},
        {"type": "S16"},
        {"type": "U16"},
        {"type": "S32"},
        {"type": "U32"},
        {"type": "S64"},
        {"type": "U64"},
        {"type": "F32"},
        {"type": "F64"},
        {"type": "Chr"},
        {"type": "Str"},
    ]
    assert function["results"] == [{"name": None, "typ": {"type": "Str"}}]


def test_composite_types() -> None:
    data = exported_function(
        wb.flags("read", "write"),  # 0
        wb.enum("low", "high"),  # 1
        wb.option("u32"),  # 2
        wb.result("u8", None),  # 3
        wb.result(None, "string"),  # 4
        wb.result(None, None),  # 5
        wb.tuple_of("u8", 2),  # 6
        wb.record(("a", 0), ("b", 1)),  # 7
        wb.variant(("none", None), ("some", 7)),  # 8
        wb.list_of(8),  # 9
        wb.func([("a", 0), ("b", 1), ("c", 3), ("d", 4), ("e", 5), ("f", 6)], 9),
    )
    function = only_function_json(data)
    params = {p["name"]: p["typ"] for p in function["parameters"]}
    assert params["a"] == {"type": "Flags", "names": ["read", "write"]}
    assert params["b"] == {"type": "Enum", "cases": ["low", "high"]}
    assert params["c"] == {"type": "Result", "ok": {"type": "U8"}, "err": None}
    assert params["d"] == {"type": "Result", "ok": None, "err": {"type": "Str"}}
    assert params["e"] == {"type": "Result", "ok": None, "err": None}
    assert params["f"] == {
        "type": "Tuple",
        "items": [{"type": "U8"}, {"type": "Option", "inner": {"type": "U32"}}],
    }
    record = {
        "type": "Record",
        "fields": [
            {"name": "a", "typ": params["a"]},
            {"name": "b", "typ": params["b"]},
        ],
    }
    assert function["results"] == [
        {
            "name": None,
            "typ": {
                "type": "List",
                "inner": {
                    "type": "Variant",
                    "cases": [{"name": "none", "typ": None}, {"name": "some", "typ": record}],
                },
            },
        }
    ]


def test_named_results_of_the_older_encoding() -> None:
    data = exported_function(wb.func_named_results([], [("lo", "u32"), ("hi", "u32")]))
    assert only_function_json(data)["results"] == [
        {"name": "lo", "typ": {"type": "U32"}},
        {"name": "hi", "typ": {"type": "U32"}},
    ]
    (function,) = analyse_component(data).exports
    assert isinstance(function, ExportedFunction)
    assert wit_signature(function) == "f: func() -> (lo: u32, hi: u32)"


def resource_interface() -> bytes:
    """Imports `test:it/api` with resources `a` and `b` and re-exports the instance."""
    api = wb.instance_type(
        wb.decl_export_resource("b"),  # type 0
        wb.decl_export_resource("a"),  # type 1
        wb.decl_type(wb.own(1)),  # 2
        wb.decl_type(wb.func([("n", "u32")], 2)),  # 3
        wb.decl_export_func("[constructor]a", 3),
        wb.decl_type(wb.borrow(1)),  # 4
        wb.decl_type(wb.own(0)),  # 5
        wb.decl_type(wb.func([("self", 4)], 5)),  # 6
        wb.decl_export_func("[method]a.split", 6),
        wb.decl_type(wb.func([], 5)),  # 7
        wb.decl_export_func("[static]b.make", 7),
    )
    return wb.component(
        wb.types(api),
        wb.imports(wb.import_instance("test:it/api", 0)),
        wb.exports(wb.export_instance("test:it/api", 0)),
    )


def test_resources_are_numbered_in_first_seen_order_and_get_drops() -> None:
    metadata = analyse_component(resource_interface())
    (instance,) = metadata.exports
    assert isinstance(instance, ExportedInstance)
    assert [wit_signature(f) for f in instance.functions] == [
        "[constructor]a: func(n: u32) -> a",
        "[method]a.split: func(self: borrow<a>) -> b",
        "[static]b.make: func() -> b",
    ]
    (api,) = exports_to_json(metadata)
    functions = api["functions"]
    assert [f["name"] for f in functions] == [
        "[constructor]a",
        "[method]a.split",
        "[static]b.make",
        "[drop]a",
    ]
    handle_a = {"type": "Handle", "resource_id": 0, "mode": "Owned"}
    assert functions[3]["parameters"] == [{"name": "self", "typ": handle_a}]
    assert functions[1]["parameters"][0]["typ"] == {**handle_a, "mode": "Borrowed"}
    assert functions[1]["results"][0]["typ"] == {**handle_a, "resource_id": 1}


def test_exports_using_unsupported_types_are_skipped_with_a_warning() -> None:
    api = wb.instance_type(
        wb.decl_type(wb.future("u32")),  # 0
        wb.decl_type(wb.func([("x", 0)])),  # 1
        wb.decl_export_func("wait", 1),
    )
    data = wb.component(
        wb.types(api, wb.func([], "u8")),
        wb.imports(wb.import_instance("test:it/async", 0), wb.import_func("g", 1)),
        wb.exports(wb.export_instance("test:it/async", 0), wb.export_func("g", 0)),
    )
    metadata = analyse_component(data)
    assert [e.name for e in metadata.exports] == ["g"]
    assert metadata.warnings == (
        "export 'test:it/async' was skipped: it uses the type 'future', "
        "which component metadata cannot represent",
    )


def test_memories_of_every_nested_module_in_binary_order() -> None:
    data = wb.component(
        wb.core_module(wb.section(5, wb.vec([wb.memory_limits(2, 16)]))),
        wb.nested_component(
            wb.core_module(wb.section(5, wb.vec([wb.memory_limits(1), wb.memory_limits(3, 3)])))
        ),
        wb.core_module(wb.section(5, wb.vec([wb.memory_limits(5, 9, page_size_log2=0)]))),
    )
    assert analyse_component(data).memories == (
        LinearMemory(2 * 65536, 16 * 65536),
        LinearMemory(65536, None),
        LinearMemory(3 * 65536, 3 * 65536),
        LinearMemory(5, 9),
    )


def test_producers_in_golem_order_own_then_modules_then_components() -> None:
    """golem-wasm-ast's order: the component's own producers, its direct core modules', then
    each nested component's (recursively), whatever the binary order of those sections."""
    data = wb.component(
        wb.core_module(wb.producers(("language", [("Rust", "")]))),
        wb.nested_component(
            wb.core_module(wb.producers(("processed-by", [("clang", "17")]))),
            wb.producers(("processed-by", [("inner", "1")])),
        ),
        wb.core_module(
            wb.producers(("processed-by", [("superseded", "0")])),
            wb.producers(("processed-by", [("zig", "0.13")])),  # the last section counts
        ),
        wb.core_module(wb.section(0, wb.name("producers") + b"\x05\x01")),  # malformed: ignored
        wb.producers(("processed-by", [("wit-component", "0.220.0"), ("cargo", "1")])),
    )
    producers = metadata_to_json(analyse_component(data))["producers"]
    assert [f["values"][0]["name"] for p in producers for f in p["fields"]] == [
        "wit-component",
        "Rust",
        "zig",
        "inner",
        "clang",
    ]
    assert producers[0] == {
        "fields": [
            {
                "name": "processed-by",
                "values": [
                    {"name": "wit-component", "version": "0.220.0"},
                    {"name": "cargo", "version": "1"},
                ],
            }
        ]
    }


def test_accepts_bytes_bytearray_and_memoryview(shared_fixtures: Path) -> None:
    data = (shared_fixtures / "golem" / "wasm" / "rust-echo.wasm").read_bytes()
    expected = analyse_component(data)
    assert analyse_component(bytearray(data)) == expected
    assert analyse_component(memoryview(data)) == expected
    (api,) = expected.exports
    assert isinstance(api, ExportedInstance)
    assert [wit_signature(f) for f in api.functions] == ["echo: func(input: string) -> string"]


def test_template_shape_is_externally_tagged(shared_fixtures: Path) -> None:
    data = (shared_fixtures / "golem" / "wasm" / "wasmast_shopping-cart.wasm").read_bytes()
    (api,) = template_exports_to_json(analyse_component(data))
    assert list(api) == ["Instance"]
    functions = api["Instance"]["functions"]
    assert api["Instance"]["name"] == "golem:it/api"
    assert functions[0] == {
        "name": "initialize-cart",
        "parameters": [{"name": "user-id", "tpe": {"Str": {}}}],
        "results": [],
    }
    checkout = next(f for f in functions if f["name"] == "checkout")
    assert checkout["results"] == [
        {
            "name": None,
            "tpe": {
                "Variant": {
                    "cases": [
                        {"name": "error", "tpe": {"Str": {}}},
                        {
                            "name": "success",
                            "tpe": {
                                "Record": {"fields": [{"name": "order-id", "tpe": {"Str": {}}}]}
                            },
                        },
                    ]
                }
            },
        }
    ]
    world = template_exports_to_json(analyse_component(exported_function(wb.func([], "u8"))))
    assert world == [
        {
            "Function": {
                "name": "f",
                "parameters": [],
                "results": [{"name": None, "tpe": {"U8": {}}}],
            }
        }
    ]


def test_each_import_of_an_instance_type_has_its_own_resources() -> None:
    """Two interfaces imported with the same instance type do not share resource `r`."""
    api = wb.instance_type(
        wb.decl_export_resource("r"),  # type 0
        wb.decl_type(wb.own(0)),  # 1
        wb.decl_type(wb.func([], 1)),  # 2
        wb.decl_export_func("[static]r.new", 2),
    )
    data = wb.component(
        wb.types(api),
        wb.imports(wb.import_instance("test:it/one", 0), wb.import_instance("test:it/two", 0)),
        wb.exports(wb.export_instance("test:it/one", 0), wb.export_instance("test:it/two", 1)),
    )
    one, two = exports_to_json(analyse_component(data))
    assert one["functions"][0]["results"][0]["typ"]["resource_id"] == 0
    assert two["functions"][0]["results"][0]["typ"]["resource_id"] == 1


def test_every_canon_builtin_is_skipped_and_only_lifts_define_functions() -> None:
    """Each builtin's immediates are consumed (as wasm-tools 1.262 encodes them: `wasm-tools
    print` reads this very binary); a lift after them still defines the function."""
    no_options = b"\x00"
    builtins = [
        b"\x02\x00",  # resource.new 0
        b"\x03\x00",  # resource.drop 0
        b"\x04\x00",  # resource.rep 0
        b"\x24",  # backpressure.inc
        b"\x25",  # backpressure.dec
        b"\x09\x00\x79\x02\x00\x03\x00",  # task.return (result u32) utf8 (memory 0)
        b"\x05",  # task.cancel
        b"\x0a\x7f\x00",  # context.get i32 0
        b"\x0b\x7f\x01",  # context.set i32 1
        b"\x06\x01",  # subtask.cancel async
        b"\x0d",  # subtask.drop
        b"\x0e\x01",  # stream.new 1
        b"\x0f\x01\x01\x06",  # stream.read 1 async
        b"\x10\x01" + no_options,  # stream.write 1
        b"\x11\x01\x00",  # stream.cancel-read 1
        b"\x12\x01\x01",  # stream.cancel-write 1 async
        b"\x13\x01",  # stream.drop-readable 1
        b"\x14\x01",  # stream.drop-writable 1
        b"\x15\x03",  # future.new 3
        b"\x16\x03" + no_options,  # future.read 3
        b"\x17\x03\x01\x03\x00",  # future.write 3 (memory 0)
        b"\x18\x03\x00",  # future.cancel-read 3
        b"\x19\x03\x01",  # future.cancel-write 3 async
        b"\x1a\x03",  # future.drop-readable 3
        b"\x1b\x03",  # future.drop-writable 3
        b"\x1c" + no_options,  # error-context.new
        b"\x1d\x01\x03\x00",  # error-context.debug-message (memory 0)
        b"\x1e",  # error-context.drop
        b"\x1f",  # waitable-set.new
        b"\x20\x00\x00",  # waitable-set.wait (memory 0)
        b"\x21\x00\x00",  # waitable-set.poll (memory 0)
        b"\x22",  # waitable-set.drop
        b"\x23",  # waitable.join
        b"\x26",  # thread.index
        b"\x27\x00\x00",  # thread.new-indirect type 0 table 0
        b"\x28",  # thread.resume-later
        b"\x29\x00",  # thread.suspend
        b"\x0c\x00",  # thread.yield
        b"\x2a\x00",  # thread.suspend-then-resume
        b"\x2b\x00",  # thread.yield-then-resume
        b"\x2c\x00",  # thread.suspend-then-promote
        b"\x2d\x00",  # thread.yield-then-promote
        b"\x40\x00",  # thread.spawn-ref type 0
        b"\x41\x00\x00",  # thread.spawn-indirect type 0 table 0
        b"\x42",  # thread.available-parallelism
        b"\x01\x00\x00" + no_options,  # lower func 0
        b"\x00\x00\x00\x02\x06\x07\x00\x02",  # lift core func 0 async (callback 0) type 2
    ]
    data = wb.component(
        wb.types(
            wb.resource(),  # 0
            b"\x66\x01\x7d",  # 1: stream<u8>
            wb.func([("x", "u32")], "u32"),  # 2
            b"\x65\x00",  # 3: future
        ),
        wb.section(8, wb.vec(builtins)),
        wb.exports(wb.export_func("f", 0)),
    )
    (function,) = analyse_component(data).exports
    assert isinstance(function, ExportedFunction)
    assert wit_signature(function) == "f: func(x: u32) -> u32"
