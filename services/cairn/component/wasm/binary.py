"""Decoder for the WebAssembly component binary format (and the parts of core modules we need).

It turns the bytes into a light syntax tree of the component-level definitions (types, imports,
exports, aliases, instances, canon lifts and nested components) and, on the way, collects every
defined core memory and every `producers` custom section. Core module code, data and the like
are skipped by their section length, never decoded, which is what keeps this fast.

Reference: component-model `design/mvp/Binary.md` (binary version 0x0d) and the core spec.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .errors import InvalidComponent, parsing_error
from .model import LinearMemory, ProducerField, Producers, ProducerVersion

MAGIC = b"\x00asm"
COMPONENT_VERSION = 0x0D
COMPONENT_LAYER = 1

PRIMITIVE_CODES: dict[int, str] = {
    0x7F: "bool",
    0x7E: "s8",
    0x7D: "u8",
    0x7C: "s16",
    0x7B: "u16",
    0x7A: "s32",
    0x79: "u32",
    0x78: "s64",
    0x77: "u64",
    0x76: "f32",
    0x75: "f64",
    0x74: "char",
    0x73: "string",
    0x64: "error-context",
}
SORTS = {0x01: "func", 0x02: "value", 0x03: "type", 0x04: "component", 0x05: "instance"}
CORE_SORTS = frozenset({0x00, 0x01, 0x02, 0x03, 0x04, 0x10, 0x11, 0x12})
CORE_SECTION_MAX_ID = 13  # tag section (exception handling)

# Syntax nodes are plain tuples (cheap to build); their first element says what they are.
# A valtype is a primitive name (str) or a type index (int).
ValType = str | int
Syntax = tuple[Any, ...]


@dataclass(slots=True)
class ComponentBody:
    """The definitions of one component, in binary order, for the analysis to evaluate."""

    offset: int
    items: list[Syntax] = field(default_factory=list)


# The input: bytes, or a read-only memory map of a large upload (indexes and slices alike).
Binary = bytes | mmap.mmap


class Reader:
    """A cursor over the input with bounds-checked LEB128 and name decoding."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: Binary, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def fail(self, reason: str, offset: int | None = None) -> NoReturn:
        raise parsing_error(reason, self.pos if offset is None else offset)

    def eof(self) -> NoReturn:
        self.fail(
            "unexpected end of input" if self.end == len(self.data) else "unexpected end of section"
        )

    def u8(self) -> int:
        pos = self.pos
        if pos >= self.end:
            self.eof()
        self.pos = pos + 1
        return self.data[pos]

    def peek(self) -> int:
        if self.pos >= self.end:
            self.eof()
        return self.data[self.pos]

    def u32(self) -> int:
        data, pos, end = self.data, self.pos, self.end
        if pos >= end:
            self.eof()
        byte = data[pos]
        if byte < 0x80:
            self.pos = pos + 1
            return byte
        start = pos
        result = byte & 0x7F
        shift = 7
        pos += 1
        while True:
            if pos >= end:
                self.pos = pos
                self.eof()
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift >= 35:
                self.fail("invalid var_u32: integer representation too long", start)
        if result > 0xFFFFFFFF:
            self.fail("invalid var_u32: integer too large", start)
        self.pos = pos
        return result

    def u64(self) -> int:
        start = self.pos
        result = 0
        shift = 0
        while True:
            byte = self.u8()
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift >= 70:
                self.fail("invalid var_u64: integer representation too long", start)
        if result > 0xFFFFFFFFFFFFFFFF:
            self.fail("invalid var_u64: integer too large", start)
        return result

    def s33(self) -> None:
        """Skips a signed LEB128 of at most 5 bytes (heap types)."""
        start = self.pos
        for _ in range(5):
            if self.u8() < 0x80:
                return
        self.fail("invalid var_s33: integer representation too long", start)

    def name(self) -> str:
        data, pos = self.data, self.pos
        # Names are almost always shorter than 128 bytes: a one-byte length.
        if pos < self.end and data[pos] < 0x80:
            length = data[pos]
            pos += 1
        else:
            length = self.u32()
            pos = self.pos
        end = pos + length
        if end > self.end:
            self.fail("unexpected end of input while reading a name")
        self.pos = end
        try:
            return data[pos:end].decode()
        except UnicodeDecodeError:
            self.fail("malformed UTF-8 encoding in a name", pos)

    def section_end(self, size: int, offset: int) -> int:
        end = self.pos + size
        if end > self.end:
            self.fail(f"section size {size} is out of bounds", offset)
        return end


def check_preamble(r: Reader, *, component: bool) -> None:
    """Reads the 8-byte header and insists on a component (or, inside one, a core module)."""
    start = r.pos
    if r.end - start < 8:
        if start == 0 and r.end == 0:
            r.fail("empty input: expected a WebAssembly component")
        if start == 0:
            r.fail("unexpected end of input in the WebAssembly header")
        r.fail("a nested module or component is too short for a WebAssembly header")
    data = r.data
    if data[start : start + 4] != MAGIC:
        r.fail("not a WebAssembly binary (bad magic number, expected \\0asm)", start)
    version = int.from_bytes(data[start + 4 : start + 6], "little")
    layer = int.from_bytes(data[start + 6 : start + 8], "little")
    r.pos = start + 8
    if component:
        if layer == COMPONENT_LAYER and version == COMPONENT_VERSION:
            return
        if layer == 0 and version == 1:
            r.fail(
                "the binary is a core WebAssembly module, not a component; "
                "wrap it into a component (e.g. `wasm-tools component new`)",
                start + 4,
            )
        if layer == COMPONENT_LAYER and version < COMPONENT_VERSION:
            r.fail(
                f"unsupported pre-release component encoding version 0x{version:x} "
                f"(expected 0x{COMPONENT_VERSION:x}); rebuild it with a current toolchain",
                start + 4,
            )
        r.fail(f"unknown binary version 0x{layer << 16 | version:x}", start + 4)
    elif not (layer == 0 and version == 1):
        r.fail(f"unknown core module binary version 0x{layer << 16 | version:x}", start + 4)


class Decoder:
    """Decodes a component (recursively) and gathers memories and producers."""

    def __init__(self, data: Binary) -> None:
        self.r = Reader(data)
        self.memories: list[LinearMemory] = []

    def decode(self) -> tuple[ComponentBody, list[Producers]]:
        r = self.r
        check_preamble(r, component=True)
        return self.component(r.end)

    # -- components ------------------------------------------------------------------------

    def component(self, end: int) -> tuple[ComponentBody, list[Producers]]:
        """Decodes sections up to `end`; returns the body and producers in Golem's order:
        the component's own, then each direct core module's, then each nested component's
        (recursively), as golem-wasm-ast's `get_all_producers` lists them."""
        r = self.r
        body = ComponentBody(r.pos - 8)
        items = body.items
        own_producers: Producers | None = None
        module_producers: list[Producers] = []
        component_producers: list[Producers] = []
        while r.pos < end:
            section_offset = r.pos
            section_id = r.u8()
            size = r.u32()
            section_end = r.section_end(size, section_offset)
            outer_end = r.end
            r.end = section_end
            if section_id == 0:
                name = r.name()
                if name == "producers":
                    own_producers = self.producers()
            elif section_id == 1:
                check_preamble(r, component=False)
                producers = self.module(section_end)
                if producers is not None:
                    module_producers.append(producers)
                items.append(("module", section_offset))
            elif section_id in (2, 3):
                # Core instances and core types never reach component-level metadata: like
                # module code, they are skipped by length (wasm-tools validate checks them).
                r.pos = section_end
            elif section_id == 4:
                check_preamble(r, component=True)
                nested, nested_producers = self.component(section_end)
                component_producers.extend(nested_producers)
                items.append(("component", section_offset, nested))
            elif section_id == 5:
                for _ in range(r.u32()):
                    items.append(self.instance())
            elif section_id == 6:
                for _ in range(r.u32()):
                    offset = r.pos
                    alias = self.alias()
                    if alias is not None:
                        items.append(("alias", offset, alias))
            elif section_id == 7:
                for _ in range(r.u32()):
                    offset = r.pos
                    items.append(("type", offset, self.deftype()))
            elif section_id == 8:
                for _ in range(r.u32()):
                    lift = self.canon()
                    if lift is not None:
                        items.append(lift)
            elif section_id == 9:
                r.u32()
                for _ in range(r.u32()):
                    r.u32()
                items.append(("values", section_offset, r.u32()))
            elif section_id == 10:
                for _ in range(r.u32()):
                    offset = r.pos
                    name = self.extern_name()
                    items.append(("import", offset, name, self.externtype()))
            elif section_id == 11:
                for _ in range(r.u32()):
                    items.append(self.export())
            elif section_id == 12:
                for _ in range(r.u32()):
                    self.valtype()
                    length = r.u32()
                    if r.pos + length > r.end:
                        r.eof()
                    r.pos += length
                    items.append(("values", section_offset, 1))
            else:
                r.fail(f"unknown component section id {section_id}", section_offset)
            if section_id != 0 and r.pos != section_end:
                r.fail(f"unexpected content at the end of section {section_id}")
            r.pos = section_end
            r.end = outer_end
        own = [] if own_producers is None else [own_producers]
        return body, own + module_producers + component_producers

    def sort(self) -> str:
        byte = self.r.u8()
        if byte == 0x00:
            core_sort = self.r.u8()
            if core_sort not in CORE_SORTS:
                self.r.fail(f"invalid core sort 0x{core_sort:x}", self.r.pos - 1)
            return "core"
        sort = SORTS.get(byte)
        if sort is None:
            self.r.fail(f"invalid sort 0x{byte:x}", self.r.pos - 1)
        return sort

    def extern_name(self) -> str:
        r = self.r
        tag = r.u8()
        if tag <= 0x01:
            return r.name()
        if tag == 0x02:
            name = r.name()
            for _ in range(r.u32()):
                attribute = r.u8()
                if attribute > 0x02:
                    r.fail(f"invalid name attribute 0x{attribute:x}", r.pos - 1)
                r.name()
            return name
        r.fail(f"invalid extern name tag 0x{tag:x}", r.pos - 1)

    def externtype(self) -> Syntax:
        r = self.r
        offset = r.pos
        if offset >= r.end:
            r.eof()
        tag = r.data[offset]
        r.pos = offset + 1
        if tag == 0x00:
            if r.u8() != 0x11:
                r.fail("invalid core module type reference", offset)
            return ("module", r.u32())
        if tag == 0x01:
            return ("func", r.u32())
        if tag == 0x02:
            # A value's type, as wasm-tools 1.262 encodes it (Binary.md's `valuebound` is newer).
            self.valtype()
            return ("value",)
        if tag == 0x03:
            bound = r.u8()
            if bound == 0x00:
                return ("type-eq", r.u32())
            if bound == 0x01:
                return ("type-sub",)
            r.fail(f"invalid type bound 0x{bound:x}", offset + 1)
        if tag == 0x04:
            return ("component", r.u32())
        if tag == 0x05:
            return ("instance", r.u32())
        r.fail(f"invalid extern type 0x{tag:x}", offset)

    def export(self) -> Syntax:
        r = self.r
        offset = r.pos
        name = self.extern_name()
        sort = self.sort()
        index = r.u32()
        ascription: Syntax | None = None
        tag = r.u8()
        if tag == 0x01:
            ascription = self.externtype()
        elif tag != 0x00:
            r.fail(f"invalid optional extern type tag 0x{tag:x}", r.pos - 1)
        return ("export", offset, name, sort, index, ascription)

    def instance(self) -> Syntax:
        r = self.r
        offset = r.pos
        tag = r.u8()
        if tag == 0x00:
            component_index = r.u32()
            args = []
            for _ in range(r.u32()):
                name = r.name()
                sort = self.sort()
                args.append((name, sort, r.u32()))
            return ("instance", offset, "instantiate", component_index, args)
        if tag == 0x01:
            exports = []
            for _ in range(r.u32()):
                name = self.extern_name()
                sort = self.sort()
                exports.append((name, sort, r.u32()))
            return ("instance", offset, "exports", exports)
        r.fail(f"invalid instance expression 0x{tag:x}", offset)

    def alias(self) -> Syntax | None:
        """Decodes an alias; core export aliases (core sorts only metadata ignores) give None."""
        r = self.r
        data, pos = r.data, r.pos
        if pos + 2 > r.end:
            r.eof()
        byte = data[pos]
        if byte == 0x00:
            if data[pos + 1] not in CORE_SORTS:
                r.fail(f"invalid core sort 0x{data[pos + 1]:x}", pos + 1)
            sort = "core"
            pos += 2
        else:
            sort = SORTS.get(byte, "")
            if not sort:
                r.fail(f"invalid sort 0x{byte:x}", pos)
            pos += 1
        r.pos = pos
        tag = r.u8()
        if tag == 0x00:
            instance = r.u32()
            return ("export", sort, instance, r.name())
        if tag == 0x01:
            r.u32()
            r.name()
            return None if sort == "core" else ("core-export", sort)
        if tag == 0x02:
            count = r.u32()
            return ("outer", sort, count, r.u32())
        r.fail(f"invalid alias target 0x{tag:x}", pos)

    def canon(self) -> Syntax | None:
        """Returns a lift (the only canon definition that makes a component function)."""
        r = self.r
        offset = r.pos
        opcode = r.u8()
        if opcode == 0x00:
            if r.u8() != 0x00:
                r.fail("invalid canon lift sort", offset + 1)
            r.u32()
            self.canon_options()
            return ("lift", offset, r.u32())
        if opcode == 0x01:
            if r.u8() != 0x00:
                r.fail("invalid canon lower sort", offset + 1)
            r.u32()
            self.canon_options()
        elif opcode in (0x02, 0x03, 0x04, 0x0E, 0x13, 0x14, 0x15, 0x1A, 0x1B):
            r.u32()
        elif opcode in (0x05, 0x0D, 0x1E, 0x1F, 0x22, 0x23, 0x24, 0x25, 0x26, 0x28):
            return None  # builtins without immediates
        elif opcode in (0x06, 0x0C, 0x29, 0x2A, 0x2B, 0x2C, 0x2D):
            self.flag_byte()
        elif opcode == 0x09:
            self.result_list()
            self.canon_options()
        elif opcode in (0x0A, 0x0B):
            self.core_valtype()
            r.u32()
        elif opcode in (0x0F, 0x10, 0x16, 0x17):
            r.u32()
            self.canon_options()
        elif opcode in (0x11, 0x12, 0x18, 0x19):
            r.u32()
            self.flag_byte()
        elif opcode in (0x1C, 0x1D):
            self.canon_options()
        elif opcode in (0x20, 0x21):
            self.flag_byte()
            r.u32()
        elif opcode == 0x27:
            r.u32()
            r.u32()
        # The thread builtins follow wasm-tools 1.262, which has no `shared?` byte (yet).
        elif opcode == 0x40:
            r.u32()
        elif opcode == 0x41:
            r.u32()
            r.u32()
        elif opcode == 0x42:
            return None  # no immediates
        else:
            r.fail(f"invalid canonical function opcode 0x{opcode:x}", offset)
        return None

    def flag_byte(self) -> None:
        if self.r.u8() > 0x01:
            self.r.fail("invalid boolean flag", self.r.pos - 1)

    def canon_options(self) -> None:
        r = self.r
        for _ in range(r.u32()):
            option = r.u8()
            if option in (0x03, 0x04, 0x05, 0x07):
                r.u32()
            elif option > 0x07:
                r.fail(f"invalid canonical option 0x{option:x}", r.pos - 1)

    # -- component types -------------------------------------------------------------------

    def valtype(self) -> ValType:
        r = self.r
        pos = r.pos
        if pos >= r.end:
            r.eof()
        byte = r.data[pos]
        if byte < 0x40:  # a small type index (s33, one byte)
            r.pos = pos + 1
            return byte
        if byte < 0x80:
            primitive = PRIMITIVE_CODES.get(byte)
            if primitive is None:
                r.fail(f"invalid value type 0x{byte:x}")
            r.pos = pos + 1
            return primitive
        return r.u32()

    def optional_valtype(self) -> ValType | None:
        tag = self.r.u8()
        if tag == 0x00:
            return None
        if tag == 0x01:
            return self.valtype()
        self.r.fail(f"invalid optional value type tag 0x{tag:x}", self.r.pos - 1)

    def labels(self) -> list[str]:
        r = self.r
        return [r.name() for _ in range(r.u32())]

    def result_list(self) -> list[tuple[str | None, ValType]]:
        r = self.r
        tag = r.u8()
        if tag == 0x00:
            return [(None, self.valtype())]
        if tag == 0x01:
            # Current encoding is 0x01 0x00 (no result); older binaries named several results.
            results: list[tuple[str | None, ValType]] = []
            for _ in range(r.u32()):
                name = r.name()
                results.append((name, self.valtype()))
            return results
        r.fail(f"invalid function result list tag 0x{tag:x}", r.pos - 1)

    def deftype(self) -> Syntax:
        r = self.r
        offset = r.pos
        if offset >= r.end:
            r.eof()
        code = r.data[offset]
        r.pos = offset + 1
        primitive = PRIMITIVE_CODES.get(code)
        if primitive is not None:
            return ("prim", primitive)
        if code == 0x72:
            fields = []
            for _ in range(r.u32()):
                label = r.name()
                fields.append((label, self.valtype()))
            return ("record", fields)
        if code == 0x71:
            cases = []
            for _ in range(r.u32()):
                label = r.name()
                payload = self.optional_valtype()
                if r.u8() != 0x00:  # the `refines` clause of early drafts is gone
                    r.fail("invalid variant case terminator", r.pos - 1)
                cases.append((label, payload))
            return ("variant", cases)
        if code == 0x70:
            return ("list", self.valtype())
        if code == 0x67:
            element = self.valtype()
            r.u32()
            return ("list", element)
        if code == 0x6F:
            return ("tuple", [self.valtype() for _ in range(r.u32())])
        if code == 0x6E:
            return ("flags", self.labels())
        if code == 0x6D:
            return ("enum", self.labels())
        if code == 0x6B:
            return ("option", self.valtype())
        if code == 0x6A:
            ok = self.optional_valtype()
            return ("result", ok, self.optional_valtype())
        if code == 0x69:
            return ("own", r.u32())
        if code == 0x68:
            return ("borrow", r.u32())
        if code in (0x66, 0x65):
            self.optional_valtype()
            return ("unsupported", "stream" if code == 0x66 else "future")
        if code == 0x63:
            self.valtype()
            self.valtype()
            return ("unsupported", "map")
        if code == 0x3F:
            representation = r.u8()
            if representation not in (0x7F, 0x7E):
                r.fail("invalid resource representation type", r.pos - 1)
            self.optional_index()  # the destructor, irrelevant to metadata
            return ("resource",)
        if code in (0x40, 0x43):
            params = []
            for _ in range(r.u32()):
                label = r.name()
                params.append((label, self.valtype()))
            return ("func", params, self.result_list())
        if code == 0x41:
            return ("component-type", self.decls(allow_import=True))
        if code == 0x42:
            return ("instance-type", self.decls(allow_import=False))
        r.fail(f"invalid component type opcode 0x{code:x}", offset)

    def optional_index(self) -> int | None:
        tag = self.r.u8()
        if tag == 0x00:
            return None
        if tag == 0x01:
            return self.r.u32()
        self.r.fail(f"invalid optional index tag 0x{tag:x}", self.r.pos - 1)

    def decls(self, *, allow_import: bool) -> list[Syntax]:
        r = self.r
        decls: list[Syntax] = []
        data = r.data
        for _ in range(r.u32()):
            offset = r.pos
            if offset >= r.end:
                r.eof()
            tag = data[offset]
            r.pos = offset + 1
            if tag == 0x00:
                self.core_type()
            elif tag == 0x01:
                decls.append(("type", offset, self.deftype()))
            elif tag == 0x02:
                alias = self.alias()
                if alias is not None:
                    decls.append(("alias", offset, alias))
            elif tag == 0x03 and allow_import:
                name = self.extern_name()
                decls.append(("import", offset, name, self.externtype()))
            elif tag == 0x04:
                name = self.extern_name()
                decls.append(("export", offset, name, self.externtype()))
            else:
                r.fail(f"invalid type declaration tag 0x{tag:x}", offset)
        return decls

    # -- core types (only skipped, but they must be well-formed) ---------------------------

    def core_type(self) -> None:
        r = self.r
        byte = r.peek()
        if byte == 0x50:  # a module type (GC's final `sub` is encoded 0x00 0x50 here)
            r.pos += 1
            self.module_type()
        elif byte == 0x00:
            r.pos += 1
            if r.u8() != 0x50:
                r.fail("invalid core sub type", r.pos - 1)
            self.core_sub_body()
        else:
            self.core_rec_type()

    def module_type(self) -> None:
        r = self.r
        for _ in range(r.u32()):
            offset = r.pos
            tag = r.u8()
            if tag == 0x00:
                r.name()
                r.name()
                self.core_import_desc()
            elif tag == 0x01:
                self.core_type()
            elif tag == 0x02:
                if r.u8() != 0x10 or r.u8() != 0x01:
                    r.fail("invalid module type alias", offset)
                r.u32()
                r.u32()
            elif tag == 0x03:
                r.name()
                self.core_import_desc()
            else:
                r.fail(f"invalid module type declaration 0x{tag:x}", offset)

    def core_rec_type(self) -> None:
        r = self.r
        if r.peek() == 0x4E:
            r.pos += 1
            for _ in range(r.u32()):
                self.core_sub_type()
        else:
            self.core_sub_type()

    def core_sub_type(self) -> None:
        r = self.r
        if r.peek() in (0x50, 0x4F):
            r.pos += 1
            self.core_sub_body()
        else:
            self.core_comp_type()

    def core_sub_body(self) -> None:
        r = self.r
        for _ in range(r.u32()):
            r.u32()
        self.core_comp_type()

    def core_comp_type(self) -> None:
        r = self.r
        offset = r.pos
        form = r.u8()
        if form == 0x60:
            for _ in range(r.u32()):
                self.core_valtype()
            for _ in range(r.u32()):
                self.core_valtype()
        elif form == 0x5F:
            for _ in range(r.u32()):
                self.core_field_type()
        elif form == 0x5E:
            self.core_field_type()
        else:
            r.fail(f"invalid core type form 0x{form:x}", offset)

    def core_field_type(self) -> None:
        r = self.r
        if r.peek() in (0x78, 0x77):
            r.pos += 1
        else:
            self.core_valtype()
        if r.u8() > 0x01:
            r.fail("invalid mutability flag", r.pos - 1)

    def core_valtype(self) -> None:
        r = self.r
        byte = r.u8()
        if 0x7B <= byte <= 0x7F or 0x65 <= byte <= 0x74:
            return
        if byte in (0x64, 0x63):
            r.s33()
            return
        r.fail(f"invalid core value type 0x{byte:x}", r.pos - 1)

    def limits(self) -> tuple[int, int | None, int]:
        """Returns (minimum, maximum, log2 page size) of table/memory limits."""
        r = self.r
        offset = r.pos
        flags = r.u8()
        if flags > 0x0F:
            r.fail(f"invalid limits flags 0x{flags:x}", offset)
        read = r.u64 if flags & 0x04 else r.u32
        minimum = read()
        maximum = read() if flags & 0x01 else None
        page_size_log2 = r.u32() if flags & 0x08 else 16
        if page_size_log2 > 16:
            r.fail("invalid custom page size", offset)
        return minimum, maximum, page_size_log2

    def core_import_desc(self) -> None:
        r = self.r
        offset = r.pos
        kind = r.u8()
        if kind == 0x00:
            r.u32()
        elif kind == 0x01:
            self.core_valtype()
            self.limits()
        elif kind == 0x02:
            self.limits()
        elif kind == 0x03:
            self.core_valtype()
            if r.u8() > 0x01:
                r.fail("invalid global mutability", r.pos - 1)
        elif kind == 0x04:
            if r.u8() != 0x00:
                r.fail("invalid tag attribute", r.pos - 1)
            r.u32()
        else:
            r.fail(f"invalid core import kind 0x{kind:x}", offset)

    # -- core modules ----------------------------------------------------------------------

    def module(self, end: int) -> Producers | None:
        """Walks a core module's sections: memories and producers are kept, the rest skipped."""
        r = self.r
        producers: Producers | None = None
        while r.pos < end:
            section_offset = r.pos
            section_id = r.u8()
            size = r.u32()
            section_end = r.section_end(size, section_offset)
            if section_id > CORE_SECTION_MAX_ID:
                r.fail(f"unknown core module section id {section_id}", section_offset)
            if section_id == 0:
                outer_end = r.end
                r.end = section_end
                if r.name() == "producers":
                    producers = self.producers()
                r.end = outer_end
            elif section_id == 5:
                outer_end = r.end
                r.end = section_end
                for _ in range(r.u32()):
                    minimum, maximum, page_size_log2 = self.limits()
                    page = 1 << page_size_log2
                    self.memories.append(
                        LinearMemory(minimum * page, None if maximum is None else maximum * page)
                    )
                if r.pos != section_end:
                    r.fail("unexpected content at the end of the memory section")
                r.end = outer_end
            r.pos = section_end
        return producers

    def producers(self) -> Producers | None:
        """Parses the body of a `producers` custom section (the reader is bounded to it).

        Like Golem (and the spec: custom sections are not validated), a malformed section is
        ignored (None); when a module has several, the last one counts.
        """
        try:
            return self.producers_fields()
        except InvalidComponent:
            return None

    def producers_fields(self) -> Producers:
        r = self.r
        fields = []
        for _ in range(r.u32()):
            field_name = r.name()
            values = []
            for _ in range(r.u32()):
                value_name = r.name()
                values.append(ProducerVersion(value_name, r.name()))
            fields.append(ProducerField(field_name, tuple(values)))
        if r.pos != r.end:
            r.fail("unexpected content at the end of the producers section")
        return Producers(tuple(fields))
