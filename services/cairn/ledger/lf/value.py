"""Run-time representation of DAML-LF values, plus generic equality and ordering.

Serializable values map onto plain Python where that is unambiguous, so the storage and API
layers can use them directly:

=================  ==========================================================================
LF type            Python value
=================  ==========================================================================
Unit               `UNIT` (the single `Unit` instance)
Bool               `bool`
Int64              `int` (checked to the signed 64-bit range by arithmetic)
Numeric n          `decimal.Decimal`, always quantized to exactly n fraction digits
Text, Party        `str`
ContractId         `str`
Date               `int`, days since 1970-01-01
Timestamp          `int`, microseconds since 1970-01-01T00:00:00Z
List               `tuple` of values
Optional           `None` for None, `Some(value)` for Some (so nested optionals stay distinct)
TextMap            `dict[str, Value]` (never mutated after construction)
GenMap             `GenMap` (entries sorted by key in LF order)
Record             `Record` (type constructor, field names, values)
Variant / Enum     `Variant` / `Enum` (constructor name and its declaration rank)
=================  ==========================================================================

Non-serializable run-time values (structs, Any, TypeRep, closures, updates) have their own
classes here or in the interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cairn.ledger.lf.ast import Identifier, Type

Value = Any


class Unit:
    """The LF unit value `()`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNIT"


UNIT = Unit()


@dataclass(frozen=True, slots=True)
class Some:
    """`Some value` of an Optional."""

    value: Value


@dataclass(frozen=True, slots=True)
class Record:
    tycon: Identifier
    fields: tuple[str, ...]
    values: tuple[Value, ...]

    def get(self, name: str) -> Value:
        return self.values[self.fields.index(name)]

    def as_dict(self) -> dict[str, Value]:
        return dict(zip(self.fields, self.values, strict=True))


@dataclass(frozen=True, slots=True)
class Variant:
    tycon: Identifier
    constructor: str
    value: Value
    rank: int


@dataclass(frozen=True, slots=True)
class Enum:
    tycon: Identifier
    constructor: str
    rank: int


@dataclass(frozen=True, slots=True)
class Struct:
    """A structural record (fields sorted by name)."""

    fields: tuple[str, ...]
    values: tuple[Value, ...]

    def get(self, name: str) -> Value:
        return self.values[self.fields.index(name)]


@dataclass(frozen=True, slots=True)
class GenMap:
    """A generic map; `entries` are (key, value) pairs sorted by key in LF order."""

    entries: tuple[tuple[Value, Value], ...]


@dataclass(frozen=True, slots=True)
class AnyValue:
    """`to_any @t v`: a value packed with its (closed) type."""

    type: Type
    value: Value


@dataclass(frozen=True, slots=True)
class TypeRep:
    type: Type


@dataclass(frozen=True, slots=True)
class AnyException:
    """A thrown exception payload with its exception type."""

    type: Type
    value: Value


class IncomparableError(Exception):
    """Raised when LF values cannot be compared (functions, updates)."""


def compare(left: Value, right: Value) -> int:
    """LF generic comparison (EQUAL/LESS builtins): -1, 0 or 1. Iterative on lists."""
    if left is right:
        return 0
    lt = type(left)
    if lt is bool or lt is int or lt is Decimal or lt is str:
        if left == right:
            return 0
        return -1 if bool(left < right) else 1
    if left is None or lt is Some:
        if left is None:
            return 0 if right is None else -1
        if right is None:
            return 1
        result: int = compare(left.value, right.value)
        return result
    if lt is tuple:
        for a, b in zip(left, right, strict=False):
            c = compare(a, b)
            if c:
                return c
        return (len(left) > len(right)) - (len(left) < len(right))
    if lt is Record or lt is Struct:
        for a, b in zip(left.values, right.values, strict=True):
            c = compare(a, b)
            if c:
                return c
        return 0
    if lt is Variant:
        if left.rank != right.rank:
            return -1 if left.rank < right.rank else 1
        return compare(left.value, right.value)
    if lt is Enum:
        return int(left.rank > right.rank) - int(left.rank < right.rank)
    if lt is Unit:
        return 0
    if lt is dict:
        return compare(tuple(sorted(left.items())), tuple(sorted(right.items())))
    if lt is GenMap:
        return compare(left.entries, right.entries)
    if lt is TypeRep:
        return compare(repr(left.type), repr(right.type))
    if lt is AnyValue:
        c = compare(repr(left.type), repr(right.type))
        return c if c else compare(left.value, right.value)
    raise IncomparableError(f"values of kind {lt.__name__} cannot be compared")


def equal(left: Value, right: Value) -> bool:
    return compare(left, right) == 0


def value_key(value: Value) -> Any:
    """A hashable canonical form of a serializable value (used to index contract keys)."""
    vt = type(value)
    if vt is tuple:
        return ("l", *(value_key(v) for v in value))
    if vt is Record:
        return ("r", str(value.tycon), *(value_key(v) for v in value.values))
    if vt is Variant:
        return ("v", value.constructor, value_key(value.value))
    if vt is Enum:
        return ("e", value.constructor)
    if vt is Some:
        return ("s", value_key(value.value))
    if vt is dict:
        return ("m", *((k, value_key(value[k])) for k in sorted(value)))
    if vt is GenMap:
        return ("g", *((value_key(k), value_key(v)) for k, v in value.entries))
    if vt is Decimal:
        return ("n", str(value))
    if vt is bool:
        return ("b", value)
    return value
