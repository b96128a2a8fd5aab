"""The JSON API query language, compiled against a template's payload type.

A query is typed by the template's payload record: an object constrains the fields it names
(recursively), a variant query names the constructor and constrains its value, scalars match by
equality, and Int64, Numeric, Text, Date and Timestamp fields also accept range objects with
`%lt`/`%lte`/`%gt`/`%gte`. Lists and maps cannot be queried. Literals are decoded with the LF JSON
rules (so `999.99` and `"999.99"` mean the same Numeric) and compared with the stored payloads,
which are kept in the canonical LF JSON encoding: each value has exactly one encoding, so an
equality is a plain comparison with the literal's canonical encoding (the query store runs these
predicates over every candidate contract, so they are kept to one call per contract).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cairn.ledger.codec import CodecError, JsonCodec, decode_timestamp, substitute
from cairn.ledger.lf.ast import PrimType, TBuiltin, TCon, Type
from cairn.runtime.errors import InvalidRequest, quote

Predicate = Callable[[Any], bool]
RANGE_OPERATORS = ("%lt", "%lte", "%gt", "%gte")
_ORDERED = {PrimType.INT64, PrimType.NUMERIC, PrimType.TEXT, PrimType.DATE, PrimType.TIMESTAMP}
_EQUALITY_ONLY = {PrimType.BOOL, PrimType.PARTY, PrimType.CONTRACT_ID, PrimType.UNIT}
_UNQUERYABLE = {PrimType.LIST: "PrimTypeList", PrimType.TEXTMAP: "PrimTypeTextMap",
                PrimType.GENMAP: "PrimTypeGenMap"}


_NOT_SCALAR = object()


class QueryError(InvalidRequest):
    """The query does not fit the template's payload type."""


def always(_: Any) -> bool:
    """The predicate of an empty query."""
    return True


def _order_key(prim: PrimType, encoded: Any) -> Any:
    """A Python value ordering like the LF values behind canonical LF JSON scalars."""
    if prim is PrimType.INT64:
        return int(encoded)
    if prim is PrimType.NUMERIC:
        return Decimal(encoded)
    if prim is PrimType.TIMESTAMP:
        return decode_timestamp(encoded)
    return encoded  # Text by code point; Date as YYYY-MM-DD orders lexically


class QueryCompiler:
    def __init__(self, codec: JsonCodec) -> None:
        self._codec = codec

    def compile(self, type_: Type, query: Any) -> Predicate:
        """A predicate over LF JSON values of `type_`; QueryError for an ill-typed query."""
        try:
            return self._compile(type_, query)
        except CodecError as err:
            raise QueryError(str(err)) from None

    def top_equalities(self, payload_type: Type, query: Any) -> tuple[tuple[str, Any], ...]:
        """The fields of a record query compared for equality with a scalar (a text, number,
        date, time, party, contract id or bool), with the canonical value they must have."""
        resolved = self._codec.resolve(payload_type)
        if not isinstance(resolved, TCon) or not isinstance(query, dict):
            return ()
        data_type = self._codec.packages.data_type(resolved.tycon)
        if data_type.kind != "record":
            return ()
        env = {p.name: a for p, a in zip(data_type.params, resolved.args, strict=True)}
        fields = {f: substitute(t, env) for f, t in data_type.fields}
        found = []
        for name, literal in query.items():
            canonical = self._scalar_equality(fields[name], literal)
            if isinstance(canonical, str | bool):
                found.append((name, canonical))
        return tuple(found)

    def _canonical(self, type_: Type, literal: Any) -> Any:
        return self._codec.encode(type_, self._codec.decode(type_, literal))

    def _compile(self, type_: Type, query: Any) -> Predicate:
        type_ = self._codec.resolve(type_)
        if isinstance(type_, TCon):
            return self._compile_data(type_, query)
        if isinstance(type_, TBuiltin):
            return self._compile_builtin(type_, query)
        raise QueryError(f"Type {type_} cannot be queried")

    def _compile_data(self, type_: TCon, query: Any) -> Predicate:
        data_type = self._codec.packages.data_type(type_.tycon)
        name = type_.tycon.qualified_name
        env = {p.name: a for p, a in zip(data_type.params, type_.args, strict=True)}
        if data_type.kind == "record":
            if not isinstance(query, dict):
                raise QueryError(
                    f"Expected a JSON object to query record {name}, got {quote(query)}"
                )
            field_types = {f: substitute(t, env) for f, t in data_type.fields}
            unknown = sorted(set(query) - set(field_types))
            if unknown:
                raise QueryError(f"{name} does not have fields {', '.join(unknown)}")
            equal: list[tuple[str, Any]] = []
            other: list[tuple[str, Predicate]] = []
            for f, q in query.items():
                canonical = self._scalar_equality(field_types[f], q)
                if canonical is not _NOT_SCALAR:
                    equal.append((f, canonical))
                else:
                    other.append((f, self._compile(field_types[f], q)))
            if not other and len(equal) == 1:
                (name, wanted), = equal
                return lambda value: value[name] == wanted  # type: ignore[no-any-return]
            return lambda value: (all(value[f] == c for f, c in equal)
                                  and all(p(value[f]) for f, p in other))
        if data_type.kind == "variant":
            if not isinstance(query, dict) or set(query) != {"tag", "value"}:
                raise QueryError(f"Expected {{\"tag\": ..., \"value\": ...}} to query variant "
                                 f"{name}, got {query!r}")
            tag = query["tag"]
            if tag not in data_type.constructors:
                raise QueryError(f"Unknown constructor {quote(tag)!r} of variant {name}")
            argument = substitute(data_type.fields[data_type.constructors.index(tag)][1], env)
            inner = self._compile(argument, query["value"])
            return lambda value: value["tag"] == tag and inner(value["value"])
        if data_type.kind == "enum":
            if query not in data_type.constructors:
                raise QueryError(f"Expected one of {', '.join(data_type.constructors)} for enum "
                                 f"{name}, got {query!r}")
            return lambda value: bool(value == query)
        raise QueryError(f"Type {name} cannot be queried")

    def _compile_builtin(self, type_: TBuiltin, query: Any) -> Predicate:
        prim = type_.prim
        if prim in _UNQUERYABLE:
            raise QueryError(f"{_UNQUERYABLE[prim]} not supported")
        if prim is PrimType.OPTIONAL:
            return self._compile_optional(type_.args[0], query, nested=False)
        if prim in _ORDERED and isinstance(query, dict):
            return self._compile_range(type_, query)
        if prim in _ORDERED or prim in _EQUALITY_ONLY:
            canonical = self._canonical(type_, query)
            return lambda value: bool(value == canonical)
        raise QueryError(f"{prim.name} cannot be queried")

    def _scalar_equality(self, type_: Type, query: Any) -> Any:
        """The canonical encoding a scalar equality compares with, else _NOT_SCALAR."""
        resolved = self._codec.resolve(type_)
        if (isinstance(resolved, TBuiltin) and not isinstance(query, dict)
                and (resolved.prim in _ORDERED or resolved.prim in _EQUALITY_ONLY)):
            return self._canonical(resolved, query)
        return _NOT_SCALAR

    def _compile_range(self, type_: TBuiltin, query: dict[str, Any]) -> Predicate:
        prim = type_.prim
        unknown = sorted(set(query) - set(RANGE_OPERATORS))
        if unknown or not query:
            raise QueryError(f"Unsupported range operator(s) {', '.join(unknown) or '(none)'}; "
                             f"expected some of {', '.join(RANGE_OPERATORS)}")
        if "%lt" in query and "%lte" in query:
            raise QueryError("Cannot use both %lt and %lte in one range")
        if "%gt" in query and "%gte" in query:
            raise QueryError("Cannot use both %gt and %gte in one range")
        bounds = {op: _order_key(prim, self._canonical(type_, literal))
                  for op, literal in query.items()}
        lower = bounds.get("%gt", bounds.get("%gte"))
        upper = bounds.get("%lt", bounds.get("%lte"))
        lower_strict, upper_strict = "%gt" in bounds, "%lt" in bounds

        def in_range(value: Any) -> bool:
            key = _order_key(prim, value)
            if lower is not None and (key <= lower if lower_strict else key < lower):
                return False
            return not (upper is not None and (key >= upper if upper_strict else key > upper))

        return in_range

    def _compile_optional(self, inner: Type, query: Any, nested: bool) -> Predicate:
        inner = self._codec.resolve(inner)
        inner_optional = isinstance(inner, TBuiltin) and inner.prim is PrimType.OPTIONAL

        def some(query_value: Any) -> Predicate:
            if inner_optional:
                assert isinstance(inner, TBuiltin)
                return self._compile_optional(inner.args[0], query_value, nested=True)
            return self._compile(inner, query_value)

        if not nested:
            if query is None:
                return lambda value: value is None
            present = some(query)
            return lambda value: value is not None and present(value)
        # Inside an outer Optional, `[]` is None and `[x]` is Some x, as in the codec.
        if not isinstance(query, list) or len(query) > 1:
            raise QueryError(f"Expected [] or [value] for a nested Optional, got {quote(query)}")
        if not query:
            return lambda value: value == []
        element = some(query[0])
        return lambda value: isinstance(value, list) and len(value) == 1 and element(value[0])


@dataclass(frozen=True)
class CompiledQuery:
    """A `/v1/query` `query` for one template: its predicate over payloads, and the top-level
    scalar equalities among its conditions (field, canonical value), which an index answers."""

    predicate: Predicate
    equalities: tuple[tuple[str, Any], ...] = ()


def compile_query(codec: JsonCodec, payload_type: Type, query: Any) -> CompiledQuery:
    """`query` compiled against a template's payload type (None/{}: everything)."""
    if query is None or query == {}:
        return CompiledQuery(always)
    compiler = QueryCompiler(codec)
    return CompiledQuery(compiler.compile(payload_type, query),
                         compiler.top_equalities(payload_type, query))
