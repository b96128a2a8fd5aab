"""Frozen dataclasses describing what a WebAssembly component exports, its producers and memories.

These mirror Golem's `AnalysedExport`/`AnalysedType` model. Every type carries an optional WIT
`name` (the name it was exported under, e.g. "product-item"); the Dec 2024 JSON shape does not
render it, but it makes the metadata printable as WIT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

PrimitiveKind = Literal[
    "bool", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64", "f32", "f64", "char", "string"
]
HandleMode = Literal["Owned", "Borrowed"]


@dataclass(frozen=True, slots=True)
class PrimitiveType:
    kind: PrimitiveKind
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ListType:
    inner: WitType
    name: str | None = None


@dataclass(frozen=True, slots=True)
class OptionType:
    inner: WitType
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ResultType:
    ok: WitType | None
    err: WitType | None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class TupleType:
    items: tuple[WitType, ...]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class RecordField:
    name: str
    typ: WitType


@dataclass(frozen=True, slots=True)
class RecordType:
    fields: tuple[RecordField, ...]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class VariantCase:
    name: str
    typ: WitType | None


@dataclass(frozen=True, slots=True)
class VariantType:
    cases: tuple[VariantCase, ...]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class EnumType:
    cases: tuple[str, ...]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class FlagsType:
    names: tuple[str, ...]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class HandleType:
    """`own<R>`/`borrow<R>`; `resource_id` numbers resources in the order analysis met them."""

    resource_id: int
    mode: HandleMode
    resource_name: str | None = None
    name: str | None = None


WitType: TypeAlias = (
    PrimitiveType
    | ListType
    | OptionType
    | ResultType
    | TupleType
    | RecordType
    | VariantType
    | EnumType
    | FlagsType
    | HandleType
)


@dataclass(frozen=True, slots=True)
class FunctionParameter:
    name: str
    typ: WitType


@dataclass(frozen=True, slots=True)
class FunctionResult:
    """One result; `name` is None for the usual single unnamed result."""

    name: str | None
    typ: WitType


@dataclass(frozen=True, slots=True)
class ExportedFunction:
    """A function; resource methods keep component-model names like `[method]cart.add-item`."""

    name: str
    parameters: tuple[FunctionParameter, ...]
    results: tuple[FunctionResult, ...]


@dataclass(frozen=True, slots=True)
class ExportedInstance:
    """An exported interface, e.g. `golem:it/api@1.2.3`, with its functions in binary order."""

    name: str
    functions: tuple[ExportedFunction, ...]


Export: TypeAlias = ExportedInstance | ExportedFunction


@dataclass(frozen=True, slots=True)
class ProducerVersion:
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class ProducerField:
    name: str
    values: tuple[ProducerVersion, ...]


@dataclass(frozen=True, slots=True)
class Producers:
    """One `producers` custom section."""

    fields: tuple[ProducerField, ...]


@dataclass(frozen=True, slots=True)
class LinearMemory:
    """A defined core memory, sizes in bytes (pages * page size)."""

    initial: int
    maximum: int | None


@dataclass(frozen=True, slots=True)
class ComponentMetadata:
    """Everything the Component API stores about an uploaded component.

    `warnings` lists exports left out because they use types Golem cannot represent
    (stream, future, error-context, map); Golem skips those the same way.
    """

    exports: tuple[Export, ...]
    producers: tuple[Producers, ...]
    memories: tuple[LinearMemory, ...]
    warnings: tuple[str, ...] = ()
