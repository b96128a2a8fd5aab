"""Pure-Python extraction of WebAssembly component metadata for the Component API.

`analyse_component(bytes)` returns the component's exports (interfaces and functions with full
WIT types), the `producers` sections of the component and of every nested module/component, and
every defined core memory. Bad input raises `InvalidComponent`, whose message starts with
"Parsing error: " or "Analysis error: ". The `render` helpers turn the result into Golem's JSON.
"""

from __future__ import annotations

import mmap

from .analysis import analyse_exports
from .binary import Decoder
from .errors import InvalidComponent, parsing_error
from .model import (
    ComponentMetadata,
    EnumType,
    Export,
    ExportedFunction,
    ExportedInstance,
    FlagsType,
    FunctionParameter,
    FunctionResult,
    HandleType,
    LinearMemory,
    ListType,
    OptionType,
    PrimitiveType,
    ProducerField,
    Producers,
    ProducerVersion,
    RecordField,
    RecordType,
    ResultType,
    TupleType,
    VariantCase,
    VariantType,
    WitType,
)
from .render import (
    exports_to_json,
    metadata_to_json,
    template_exports_to_json,
    wit_signature,
    wit_type,
)


def analyse_component(data: bytes | bytearray | memoryview | mmap.mmap) -> ComponentMetadata:
    """Parses a component binary and returns its metadata; raises InvalidComponent.

    A memory-mapped file is read in place (only the pages the parser touches are loaded)."""
    # Indexing `bytes` is the fastest way to read single bytes in CPython; one copy is cheap.
    raw = data if isinstance(data, bytes | mmap.mmap) else bytes(data)
    decoder = Decoder(raw)
    try:
        body, producers = decoder.decode()
    except RecursionError:
        raise parsing_error("components or types are nested too deeply") from None
    exports, warnings = analyse_exports(body)
    return ComponentMetadata(exports, tuple(producers), tuple(decoder.memories), warnings)


__all__ = [
    "ComponentMetadata",
    "EnumType",
    "Export",
    "ExportedFunction",
    "ExportedInstance",
    "FlagsType",
    "FunctionParameter",
    "FunctionResult",
    "HandleType",
    "InvalidComponent",
    "LinearMemory",
    "ListType",
    "OptionType",
    "PrimitiveType",
    "ProducerField",
    "ProducerVersion",
    "Producers",
    "RecordField",
    "RecordType",
    "ResultType",
    "TupleType",
    "VariantCase",
    "VariantType",
    "WitType",
    "analyse_component",
    "exports_to_json",
    "metadata_to_json",
    "template_exports_to_json",
    "wit_signature",
    "wit_type",
]
