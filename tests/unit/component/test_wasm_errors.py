"""Bad input is rejected with InvalidComponent and a client-fit message, never a bare exception."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
import wasm_binary_builder as wb

from cairn.component.wasm import InvalidComponent, analyse_component


def fixture(shared_fixtures: Path, name: str) -> bytes:
    return (shared_fixtures / "golem" / "wasm" / name).read_bytes()


def rejection(data: bytes) -> InvalidComponent:
    with pytest.raises(InvalidComponent) as caught:
        analyse_component(data)
    return caught.value


def test_core_module_is_rejected(shared_fixtures: Path) -> None:
    error = rejection(fixture(shared_fixtures, "negative_core-module_moonbit-release.wasm"))
    assert str(error).startswith(
        "Parsing error: the binary is a core WebAssembly module, not a component"
    )
    assert error.kind == "Parsing"
    assert error.offset == 4


def test_pre_release_component_encoding_is_rejected(shared_fixtures: Path) -> None:
    error = rejection(fixture(shared_fixtures, "negative_old-component-encoding-0x0c.wasm"))
    assert str(error) == (
        "Parsing error: unsupported pre-release component encoding version 0xc (expected 0xd); "
        "rebuild it with a current toolchain (at offset 0x4)"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "Parsing error: empty input: expected a WebAssembly component"),
        (b"\x00as", "Parsing error: unexpected end of input in the WebAssembly header"),
        (b"hello world, not wasm", "Parsing error: not a WebAssembly binary (bad magic number"),
        (b"\x00asm\x0e\x00\x01\x00", "Parsing error: unknown binary version 0x1000e"),
        (wb.COMPONENT_HEADER + b"\x07", "Parsing error: unexpected end of input (at offset 0x9)"),
        (
            wb.COMPONENT_HEADER + b"\x07\x10\x00",
            "Parsing error: section size 16 is out of bounds (at offset 0x8)",
        ),
        (wb.COMPONENT_HEADER + b"\x0d\x00", "Parsing error: unknown component section id 13"),
        (
            wb.component(wb.types(b"\x55")),
            "Parsing error: invalid component type opcode 0x55 (at offset 0xb)",
        ),
        (
            wb.component(wb.section(7, b"\x01\x70\x79\x00")),
            "Parsing error: unexpected content at the end of section 7",
        ),
        (
            wb.component(wb.section(7, b"\x01\x70\xff\xff\xff\xff\xff\x01")),
            "Parsing error: invalid var_u32: integer representation too long",
        ),
        (
            wb.component(wb.section(7, b"\x01\x70\xff\xff\xff\xff\x7f")),
            "Parsing error: invalid var_u32: integer too large",
        ),
        (
            wb.component(wb.section(0, b"\x02\xff\xfe")),
            "Parsing error: malformed UTF-8 encoding in a name",
        ),
        (
            wb.component(wb.section(4, b"")),
            "Parsing error: a nested module or component is too short for a WebAssembly header",
        ),
        (
            wb.component(wb.section(1, b"\x00asm\x02\x00\x00\x00")),
            "Parsing error: unknown core module binary version 0x2",
        ),
    ],
)
def test_malformed_binaries_give_parsing_errors(data: bytes, message: str) -> None:
    assert str(rejection(data)).startswith(message)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            wb.component(wb.exports(wb.export_func("f", 5))),
            "Analysis error: unknown function 5: function index out of bounds (0 defined)",
        ),
        (
            wb.component(wb.types(b"\x70\x03")),
            "Analysis error: unknown type 3: type index out of bounds (0 defined)",
        ),
        (
            wb.component(wb.types(wb.func([]), wb.list_of(0))),
            "Analysis error: type 0 is not a value type",
        ),
        (
            wb.component(wb.types(wb.list_of("u8"), wb.own(0))),
            "Analysis error: own handle refers to type 0, which is not a resource",
        ),
        (
            wb.component(wb.types(wb.list_of("u8")), wb.imports(wb.import_func("f", 0))),
            "Analysis error: type 0 is not a function type",
        ),
        (
            wb.component(
                wb.types(wb.instance_type()),
                wb.imports(wb.import_instance("i", 0)),
                wb.section(6, wb.vec([b"\x01\x00\x00" + wb.name("missing")])),
            ),
            "Analysis error: instance 0 has no export named 'missing'",
        ),
        (
            wb.component(wb.section(6, wb.vec([b"\x03\x02\x05\x00"]))),
            "Analysis error: outer alias count 5 is out of bounds",
        ),
    ],
)
def test_inconsistent_components_give_analysis_errors(data: bytes, message: str) -> None:
    error = rejection(data)
    assert str(error).startswith(message)
    assert error.kind == "Analysis"


def top_level_section_boundaries(data: bytes) -> set[int]:
    """Offsets at which a prefix of `data` is itself a complete component."""
    boundaries = {8}
    position = 8
    while position < len(data):
        position += 1
        size, shift = 0, 0
        while True:
            byte = data[position]
            position += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        position += size
        boundaries.add(position)
    return boundaries


def test_every_truncation_of_a_small_component_is_rejected(shared_fixtures: Path) -> None:
    data = fixture(shared_fixtures, "rust-echo.wasm")
    boundaries = top_level_section_boundaries(data)
    # Every offset in the component-level tail (types, imports, exports, the shim), every
    # 7th offset elsewhere (core module bodies are skipped by length, so they fail alike).
    offsets = set(range(0, len(data), 7)) | set(range(len(data) - 3000, len(data)))
    rejected = 0
    for offset in sorted(offsets):
        if offset in boundaries:
            # A prefix ending on a section boundary is a well-formed (smaller) component.
            with contextlib.suppress(InvalidComponent):
                analyse_component(data[:offset])
            continue
        with pytest.raises(InvalidComponent):
            analyse_component(data[:offset])
        rejected += 1
    assert rejected > 4000


def test_random_mutations_never_raise_anything_but_invalid_component(
    shared_fixtures: Path,
) -> None:
    rng = random.Random(20261122)
    seeds = [
        fixture(shared_fixtures, "rust-echo.wasm"),
        fixture(shared_fixtures, "wasmast_shopping-cart-resource.wasm"),
    ]
    outcomes = {"accepted": 0, "rejected": 0}
    for _ in range(600):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            # Mostly hit the component-level definitions at the end of the binary.
            position = rng.randrange(max(0, len(data) - 6000), len(data))
            action = rng.random()
            if action < 0.6:
                data[position] = rng.randrange(256)
            elif action < 0.8:
                data.insert(position, rng.randrange(256))
            else:
                del data[position]
        try:
            analyse_component(bytes(data))
            outcomes["accepted"] += 1
        except InvalidComponent as error:
            assert str(error).startswith(("Parsing error: ", "Analysis error: "))
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 100


def test_garbage_is_rejected() -> None:
    rng = random.Random(7)
    for length in (1, 7, 8, 64, 4096):
        garbage = bytes(rng.randrange(256) for _ in range(length))
        rejection(garbage)
        # Behind a valid header, garbage must still fail cleanly (or, by chance, parse).
        with contextlib.suppress(InvalidComponent):
            analyse_component(wb.COMPONENT_HEADER + garbage)


def test_inputs_that_would_explode_are_rejected() -> None:
    # t(i+1) = tuple<t(i), t(i)>: 40 small type definitions expand to 2^41 nodes in JSON.
    definitions = [wb.tuple_of("u8", "u8")] + [wb.tuple_of(i, i) for i in range(40)]
    definitions.append(wb.func([("x", 40)]))
    exploding = wb.component(
        wb.types(*definitions),
        wb.imports(wb.import_func("f", 41)),
        wb.exports(wb.export_func("f", 0)),
    )
    assert "exported types are too large" in str(rejection(exploding))

    deep = [wb.list_of("u8")] + [wb.list_of(i) for i in range(150)]
    deep.append(wb.func([("x", 150)]))
    nested = wb.component(
        wb.types(*deep), wb.imports(wb.import_func("f", 151)), wb.exports(wb.export_func("f", 0))
    )
    assert "nested deeper than 100 levels" in str(rejection(nested))


def test_deeply_nested_components_are_rejected() -> None:
    data = wb.component()
    for _ in range(3000):
        data = wb.component(wb.section(4, data))
    assert str(rejection(data)).startswith("Parsing error: components or types are nested")


def test_message_property_is_the_client_message() -> None:
    error = rejection(b"")
    assert error.message == str(error) == error.args[0]
    assert isinstance(error, ValueError)


def test_invalid_component_can_be_raised_with_a_message() -> None:
    error = InvalidComponent("Analysis error: the component has no exports")
    assert error.message == str(error) == "Analysis error: the component has no exports"
    assert error.kind == "Analysis"
    assert error.offset is None


def test_importing_a_large_instance_type_many_times_is_bounded() -> None:
    # One instance type with a 5,000-field record imported 2,000 times would be re-evaluated
    # 2,000 times (each import gets its own resources): the work budget stops it early.
    fields = [(f"f{n}", "u8") for n in range(5000)]
    big = wb.instance_type(wb.decl_type(wb.record(*fields)))
    imports = [wb.import_instance(f"i{n}", 0) for n in range(2000)]
    data = wb.component(wb.types(big), wb.imports(*imports))
    assert "needs too much work to analyse" in str(rejection(data))
