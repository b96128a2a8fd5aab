"""Hand-encodes small component and core-module binaries for the WASM metadata tests.

Only what the tests need: the encodings follow component-model `Binary.md` (version 0x0d).
"""

from __future__ import annotations

from collections.abc import Sequence

COMPONENT_HEADER = b"\x00asm\x0d\x00\x01\x00"
MODULE_HEADER = b"\x00asm\x01\x00\x00\x00"

PRIMITIVE = {
    "bool": 0x7F,
    "s8": 0x7E,
    "u8": 0x7D,
    "s16": 0x7C,
    "u16": 0x7B,
    "s32": 0x7A,
    "u32": 0x79,
    "s64": 0x78,
    "u64": 0x77,
    "f32": 0x76,
    "f64": 0x75,
    "char": 0x74,
    "string": 0x73,
}


def leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb(value: int) -> bytes:
    """Signed LEB128 (type indices inside value types are s33, so 64 is `0xc0 0x00`)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte if done else byte | 0x80)
        if done:
            return bytes(out)


def name(text: str) -> bytes:
    encoded = text.encode()
    return leb(len(encoded)) + encoded


def vec(items: list[bytes]) -> bytes:
    return leb(len(items)) + b"".join(items)


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + leb(len(payload)) + payload


def component(*sections: bytes) -> bytes:
    return COMPONENT_HEADER + b"".join(sections)


def valtype(t: str | int) -> bytes:
    """A primitive by name or a type index."""
    return bytes([PRIMITIVE[t]]) if isinstance(t, str) else sleb(t)


def optional(t: str | int | None) -> bytes:
    return b"\x00" if t is None else b"\x01" + valtype(t)


# -- type definitions (entries of a type section) -------------------------------------------


def record(*fields: tuple[str, str | int]) -> bytes:
    return b"\x72" + vec([name(n) + valtype(t) for n, t in fields])


def variant(*cases: tuple[str, str | int | None]) -> bytes:
    return b"\x71" + vec([name(n) + optional(t) + b"\x00" for n, t in cases])


def list_of(t: str | int) -> bytes:
    return b"\x70" + valtype(t)


def tuple_of(*items: str | int) -> bytes:
    return b"\x6f" + vec([valtype(t) for t in items])


def flags(*names: str) -> bytes:
    return b"\x6e" + vec([name(n) for n in names])


def enum(*names: str) -> bytes:
    return b"\x6d" + vec([name(n) for n in names])


def option(t: str | int) -> bytes:
    return b"\x6b" + valtype(t)


def result(ok: str | int | None, err: str | int | None) -> bytes:
    return b"\x6a" + optional(ok) + optional(err)


def own(resource_index: int) -> bytes:
    return b"\x69" + leb(resource_index)


def borrow(resource_index: int) -> bytes:
    return b"\x68" + leb(resource_index)


def future(t: str | int | None) -> bytes:
    return b"\x65" + optional(t)


def resource() -> bytes:
    """A locally defined resource with an i32 representation and no destructor."""
    return b"\x3f\x7f\x00"


def func(params: Sequence[tuple[str, str | int]], result_type: str | int | None = None) -> bytes:
    results = b"\x01\x00" if result_type is None else b"\x00" + valtype(result_type)
    return b"\x40" + vec([name(n) + valtype(t) for n, t in params]) + results


def func_named_results(
    params: Sequence[tuple[str, str | int]], results: Sequence[tuple[str, str | int]]
) -> bytes:
    """The older multi-result encoding (0x01 followed by named results)."""
    return (
        b"\x40"
        + vec([name(n) + valtype(t) for n, t in params])
        + b"\x01"
        + vec([name(n) + valtype(t) for n, t in results])
    )


def instance_type(*decls: bytes) -> bytes:
    return b"\x42" + vec(list(decls))


def decl_type(definition: bytes) -> bytes:
    return b"\x01" + definition


def decl_export_func(export_name: str, type_index: int) -> bytes:
    return b"\x04\x00" + name(export_name) + b"\x01" + leb(type_index)


def decl_export_type_eq(export_name: str, type_index: int) -> bytes:
    return b"\x04\x00" + name(export_name) + b"\x03\x00" + leb(type_index)


def decl_export_resource(export_name: str) -> bytes:
    return b"\x04\x00" + name(export_name) + b"\x03\x01"


# -- sections ---------------------------------------------------------------------------------


def types(*definitions: bytes) -> bytes:
    return section(7, vec(list(definitions)))


def import_func(import_name: str, type_index: int) -> bytes:
    return b"\x00" + name(import_name) + b"\x01" + leb(type_index)


def import_instance(import_name: str, type_index: int) -> bytes:
    return b"\x01" + name(import_name) + b"\x05" + leb(type_index)


def imports(*entries: bytes) -> bytes:
    return section(10, vec(list(entries)))


def export_func(export_name: str, func_index: int) -> bytes:
    return b"\x00" + name(export_name) + b"\x01" + leb(func_index) + b"\x00"


def export_instance(export_name: str, instance_index: int) -> bytes:
    return b"\x01" + name(export_name) + b"\x05" + leb(instance_index) + b"\x00"


def exports(*entries: bytes) -> bytes:
    return section(11, vec(list(entries)))


def producers(*fields: tuple[str, list[tuple[str, str]]]) -> bytes:
    body = vec([name(f) + vec([name(n) + name(v) for n, v in values]) for f, values in fields])
    return section(0, name("producers") + body)


def memory_limits(
    minimum: int, maximum: int | None = None, page_size_log2: int | None = None
) -> bytes:
    flags_byte = (0x01 if maximum is not None else 0) | (0x08 if page_size_log2 is not None else 0)
    encoded = bytes([flags_byte]) + leb(minimum)
    if maximum is not None:
        encoded += leb(maximum)
    if page_size_log2 is not None:
        encoded += leb(page_size_log2)
    return encoded


def core_module(*sections: bytes) -> bytes:
    """A component section 1 wrapping a core module made of the given sections."""
    return section(1, MODULE_HEADER + b"".join(sections))


def nested_component(*sections: bytes) -> bytes:
    return section(4, component(*sections))
