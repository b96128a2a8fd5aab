"""Type-directed DAML-LF JSON codec, as used by the HTTP JSON API v1 ("LF JSON encoding").

The same JSON can mean different LF values depending on the expected type, so both directions
walk the LF type: records as objects (or arrays in field order on input), variants as
`{"tag", "value"}`, enums as strings, nested optionals as `null` / `[]` / `[x]`, Int64 and
Numeric as strings on output (numbers or strings on input), dates as `YYYY-MM-DD`, timestamps
as ISO-8601 UTC with 0, 3 or 6 fraction digits. Type parameters of records and variants are
substituted before choosing an encoding.

Callers should parse request bodies with `json.loads(..., parse_float=Decimal)` so Numeric
literals reach the codec without binary floating-point rounding; plain floats are accepted too
(via their shortest repr).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext
from typing import Any

from cairn.ledger.lf.ast import (
    DataType,
    Identifier,
    PrimType,
    TBuiltin,
    TCon,
    TForall,
    TNat,
    TStruct,
    TSyn,
    TVar,
    Type,
)
from cairn.ledger.lf.builtins import (
    INT64_MAX,
    INT64_MIN,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    timestamp_to_text,
)
from cairn.ledger.lf.errors import InvalidArgument
from cairn.ledger.lf.interp import Contract
from cairn.ledger.lf.packages import PackageSet, UnknownDefinition
from cairn.ledger.lf.value import UNIT, Enum, GenMap, Record, Some, Variant, compare

_INT64_RE = re.compile(r"[+-]?\d+")
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIMESTAMP_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")
_PARTY_RE = re.compile(r"[a-zA-Z0-9:\-_ ]+")
_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)
_WIDE = Context(prec=200)
MAX_NESTING = 100


class CodecError(InvalidArgument):
    """The JSON does not match the expected LF type; the message is fit for an API client."""


def _describe(data: Any) -> str:
    text = repr(data) if not isinstance(data, str) else f'"{data}"'
    return text if len(text) <= 80 else text[:77] + "..."


def substitute(type_: Type, env: Mapping[str, Type]) -> Type:
    """Replace type variables bound in `env`."""
    if not env:
        return type_
    if isinstance(type_, TVar):
        bound = env.get(type_.name)
        if bound is None:
            return TVar(type_.name, tuple(substitute(a, env) for a in type_.args))
        if type_.args:
            extra = tuple(substitute(a, env) for a in type_.args)
            if isinstance(bound, TCon):
                return TCon(bound.tycon, bound.args + extra)
            if isinstance(bound, TBuiltin):
                return TBuiltin(bound.prim, bound.args + extra)
        return bound
    if isinstance(type_, TCon):
        return TCon(type_.tycon, tuple(substitute(a, env) for a in type_.args))
    if isinstance(type_, TBuiltin):
        return TBuiltin(type_.prim, tuple(substitute(a, env) for a in type_.args))
    if isinstance(type_, TSyn):
        return TSyn(type_.name, tuple(substitute(a, env) for a in type_.args))
    if isinstance(type_, TStruct):
        return TStruct(tuple((n, substitute(t, env)) for n, t in type_.fields))
    if isinstance(type_, TForall):
        inner = {k: v for k, v in env.items() if k not in {p.name for p in type_.params}}
        return TForall(type_.params, substitute(type_.body, inner))
    return type_


class JsonCodec:
    """Encodes and decodes LF values as JSON API JSON, resolving types through `packages`."""

    def __init__(self, packages: PackageSet) -> None:
        self.packages = packages

    # ------------------------------------------------------------------ type helpers
    def _data_type(self, tycon: Identifier) -> DataType:
        try:
            return self.packages.data_type(tycon)
        except UnknownDefinition as exc:
            raise CodecError(str(exc)) from None

    def _instantiate(self, type_: TCon) -> tuple[DataType, dict[str, Type]]:
        dt = self._data_type(type_.tycon)
        if len(dt.params) != len(type_.args):
            raise CodecError(f"Type {type_.tycon.qualified_name} expects {len(dt.params)} type "
                             f"arguments, got {len(type_.args)}")
        return dt, {p.name: a for p, a in zip(dt.params, type_.args, strict=True)}

    def resolve(self, type_: Type) -> Type:
        """Expand type synonyms at the head of `type_`."""
        while isinstance(type_, TSyn):
            syn = self.packages.synonym(type_.name)
            type_ = substitute(syn.type, {p.name: a for p, a in
                                          zip(syn.params, type_.args, strict=True)})
        return type_

    def record_fields(self, type_: TCon) -> list[tuple[str, Type]]:
        """Field names and (instantiated) types of a record type."""
        dt, env = self._instantiate(type_)
        if dt.kind != "record":
            raise CodecError(f"{type_.tycon.qualified_name} is not a record type")
        return [(name, substitute(ftype, env)) for name, ftype in dt.fields]

    # ------------------------------------------------------------------ decode
    def decode(self, type_: Type, data: Any) -> Any:
        """JSON (as parsed by `json.loads`) to an LF value of `type_`."""
        return self._decode(type_, data, 0)

    def _decode(self, type_: Type, data: Any, depth: int) -> Any:
        if depth > MAX_NESTING:
            raise CodecError(f"Value exceeds the maximum nesting depth of {MAX_NESTING}")
        type_ = self.resolve(type_)
        if isinstance(type_, TBuiltin):
            return self._decode_builtin(type_, data, depth)
        if isinstance(type_, TCon):
            dt, env = self._instantiate(type_)
            name = type_.tycon.qualified_name
            if dt.kind == "record":
                return self._decode_record(type_.tycon, dt, env, data, depth)
            if dt.kind == "variant":
                if not isinstance(data, dict) or "tag" not in data:
                    raise CodecError(f"Expected a variant object {{\"tag\": ..., \"value\": ...}}"
                                     f" for {name}, got {_describe(data)}")
                tag = data["tag"]
                if tag not in dt.constructors:
                    raise CodecError(f"Unknown constructor {_describe(tag)} for variant {name}; "
                                     f"expected one of {', '.join(dt.constructors)}")
                if "value" not in data:
                    raise CodecError(f"Variant {name} constructor {tag} requires a \"value\" "
                                     f"field")
                rank = dt.constructors.index(tag)
                arg_type = substitute(dt.fields[rank][1], env)
                return Variant(type_.tycon, tag, self._decode(arg_type, data["value"],
                                                              depth + 1), rank)
            if dt.kind == "enum":
                if not isinstance(data, str) or data not in dt.constructors:
                    raise CodecError(f"Expected one of {', '.join(dt.constructors)} for enum "
                                     f"{name}, got {_describe(data)}")
                return Enum(type_.tycon, data, dt.constructors.index(data))
            raise CodecError(f"Type {name} is not serializable")
        raise CodecError(f"Type {type_} is not serializable")

    def _decode_record(self, tycon: Identifier, dt: DataType, env: dict[str, Type], data: Any,
                       depth: int) -> Record:
        names = dt.field_names()
        name = tycon.qualified_name
        values = []
        if isinstance(data, list):
            if len(data) != len(dt.fields):
                raise CodecError(f"Record {name} in array form has the wrong number of "
                                 f"fields: expected {len(dt.fields)}, found {len(data)}")
            for (_, ftype), item in zip(dt.fields, data, strict=True):
                values.append(self._decode(substitute(ftype, env), item, depth + 1))
        elif isinstance(data, dict):
            for field_name, ftype in dt.fields:
                ftype = self.resolve(substitute(ftype, env))
                if field_name in data:
                    try:
                        values.append(self._decode(ftype, data[field_name], depth + 1))
                    except CodecError as exc:
                        raise CodecError(f"{name}.{field_name}: {exc}") from None
                elif isinstance(ftype, TBuiltin) and ftype.prim is PrimType.OPTIONAL:
                    values.append(None)
                else:
                    raise CodecError(f"Missing required field {field_name!r} of record {name}")
        else:
            raise CodecError(f"Expected a JSON object or array for record {name}, got "
                             f"{_describe(data)}")
        return Record(tycon, names, tuple(values))

    def _decode_builtin(self, type_: TBuiltin, data: Any, depth: int) -> Any:
        prim = type_.prim
        if prim is PrimType.TEXT:
            if not isinstance(data, str):
                raise CodecError(f"Expected a JSON string for Text, got {_describe(data)}")
            return _check_text(data)
        if prim is PrimType.PARTY:
            return decode_party(data)
        if prim is PrimType.INT64:
            return decode_int64(data)
        if prim is PrimType.NUMERIC:
            scale = type_.args[0]
            if not isinstance(scale, TNat):
                raise CodecError("Numeric type without a fixed scale is not serializable")
            return decode_numeric(data, scale.value)
        if prim is PrimType.BOOL:
            if not isinstance(data, bool):
                raise CodecError(f"Expected true or false for Bool, got {_describe(data)}")
            return data
        if prim is PrimType.UNIT:
            if not isinstance(data, dict):
                raise CodecError(f"Expected {{}} for Unit, got {_describe(data)}")
            return UNIT
        if prim is PrimType.CONTRACT_ID:
            if not isinstance(data, str) or not data:
                raise CodecError(f"Expected a contract id string, got {_describe(data)}")
            return data
        if prim is PrimType.DATE:
            return decode_date(data)
        if prim is PrimType.TIMESTAMP:
            return decode_timestamp(data)
        if prim is PrimType.LIST:
            if not isinstance(data, list):
                raise CodecError(f"Expected a JSON array for List, got {_describe(data)}")
            element = type_.args[0]
            return tuple(self._decode(element, item, depth + 1) for item in data)
        if prim is PrimType.OPTIONAL:
            return self._decode_optional(type_.args[0], data, depth)
        if prim is PrimType.TEXTMAP:
            if not isinstance(data, dict):
                raise CodecError(f"Expected a JSON object for TextMap, got {_describe(data)}")
            element = type_.args[0]
            return {_check_text(key): self._decode(element, data[key], depth + 1)
                    for key in sorted(data)}
        if prim is PrimType.GENMAP:
            return self._decode_genmap(type_, data, depth)
        raise CodecError(f"Type {prim.name} is not serializable")

    def _decode_optional(self, inner: Type, data: Any, depth: int) -> Any:
        """`null` is None. When the payload is itself Optional, Some is spelled as an array:
        `[]` is Some None and `[x]` is Some x (x decoded at the inner Optional type)."""
        if data is None:
            return None
        inner = self.resolve(inner)
        if isinstance(inner, TBuiltin) and inner.prim is PrimType.OPTIONAL:
            if not isinstance(data, list) or len(data) > 1:
                raise CodecError(f"Expected null, [] or [value] for a nested Optional, got "
                                 f"{_describe(data)}")
            if not data:
                return Some(None)
            return Some(self._decode_optional(inner.args[0], data[0], depth + 1))
        return Some(self._decode(inner, data, depth + 1))

    def _decode_genmap(self, type_: TBuiltin, data: Any, depth: int) -> GenMap:
        if not isinstance(data, list):
            raise CodecError(f"Expected a JSON array of [key, value] pairs for GenMap, got "
                             f"{_describe(data)}")
        key_type, value_type = type_.args
        entries: list[tuple[Any, Any]] = []
        raw_keys: dict[int, Any] = {}
        for pair in data:
            if not isinstance(pair, list) or len(pair) != 2:
                raise CodecError(f"Expected a [key, value] pair in GenMap, got {_describe(pair)}")
            entries.append((self._decode(key_type, pair[0], depth + 1),
                            self._decode(value_type, pair[1], depth + 1)))
            raw_keys[id(entries[-1][0])] = pair[0]
        entries.sort(key=_CompareKey)
        for (a, _), (b, _) in itertools.pairwise(entries):
            if compare(a, b) == 0:
                raise CodecError(f"duplicate key: {_describe(raw_keys.get(id(b), b))}")
        return GenMap(tuple(entries))

    # ------------------------------------------------------------------ encode
    def encode(self, type_: Type, value: Any) -> Any:
        """An LF value of `type_` to JSON-compatible Python data."""
        type_ = self.resolve(type_)
        if isinstance(type_, TBuiltin):
            return self._encode_builtin(type_, value)
        if isinstance(type_, TCon):
            dt, env = self._instantiate(type_)
            if dt.kind == "record":
                if not isinstance(value, Record):
                    raise CodecError(f"Expected a record value for {type_.tycon}")
                return {name: self.encode(substitute(ftype, env), item)
                        for (name, ftype), item in zip(dt.fields, value.values, strict=True)}
            if dt.kind == "variant":
                if not isinstance(value, Variant):
                    raise CodecError(f"Expected a variant value for {type_.tycon}")
                arg_type = substitute(dt.fields[value.rank][1], env)
                return {"tag": value.constructor, "value": self.encode(arg_type, value.value)}
            if dt.kind == "enum":
                if not isinstance(value, Enum):
                    raise CodecError(f"Expected an enum value for {type_.tycon}")
                return value.constructor
        raise CodecError(f"Type {type_} is not serializable")

    def _encode_builtin(self, type_: TBuiltin, value: Any) -> Any:
        prim = type_.prim
        if prim in (PrimType.TEXT, PrimType.PARTY, PrimType.CONTRACT_ID, PrimType.BOOL):
            return value
        if prim is PrimType.INT64:
            return str(value)
        if prim is PrimType.NUMERIC:
            return encode_numeric(value)
        if prim is PrimType.UNIT:
            return {}
        if prim is PrimType.DATE:
            return encode_date(value)
        if prim is PrimType.TIMESTAMP:
            return encode_timestamp(value)
        if prim is PrimType.LIST:
            return [self.encode(type_.args[0], item) for item in value]
        if prim is PrimType.OPTIONAL:
            return self._encode_optional(type_.args[0], value)
        if prim is PrimType.TEXTMAP:
            return {key: self.encode(type_.args[0], value[key]) for key in sorted(value)}
        if prim is PrimType.GENMAP:
            key_type, value_type = type_.args
            return [[self.encode(key_type, k), self.encode(value_type, v)]
                    for k, v in value.entries]
        raise CodecError(f"Type {prim.name} is not serializable")

    def _encode_optional(self, inner: Type, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Some):
            raise CodecError("Expected an Optional value")
        inner = self.resolve(inner)
        if isinstance(inner, TBuiltin) and inner.prim is PrimType.OPTIONAL:
            if value.value is None:
                return []
            return [self._encode_optional(inner.args[0], value.value)]
        return self.encode(inner, value.value)


    # ------------------------------------------------------------------ contracts
    def encode_contract(self, contract: Contract) -> dict[str, Any]:
        """A contract in the JSON API's active-contract shape (plus `maintainers`), which also
        round-trips losslessly through `decode_contract` (e.g. for storage)."""
        template = self.packages.template(contract.template_id)
        data: dict[str, Any] = {
            "contractId": contract.contract_id,
            "templateId": str(contract.template_id),
            "payload": self.encode(TCon(contract.template_id), contract.argument),
            "signatories": list(contract.signatories),
            "observers": list(contract.observers),
            "agreementText": contract.agreement_text,
        }
        if template.key is not None:
            data["key"] = self.encode(template.key.type, contract.key)
            data["maintainers"] = list(contract.maintainers)
        return data

    def decode_contract(self, data: Mapping[str, Any]) -> Contract:
        """The inverse of `encode_contract`."""
        try:
            template_id = parse_identifier(data["templateId"])
            template = self.packages.template(template_id)
            has_key = template.key is not None
            return Contract(
                contract_id=data["contractId"],
                template_id=template_id,
                argument=self.decode(TCon(template_id), data["payload"]),
                signatories=tuple(data["signatories"]),
                observers=tuple(data["observers"]),
                agreement_text=data.get("agreementText", ""),
                key=self.decode(template.key.type, data["key"]) if template.key else None,
                maintainers=tuple(data.get("maintainers", ())),
                has_key=has_key,
            )
        except KeyError as missing:
            raise CodecError(f"Contract JSON lacks the field {missing}") from None


def parse_identifier(text: str) -> Identifier:
    """`<packageId>:<Module.Name>:<Entity.Name>` to an `Identifier`."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 3 or not all(parts):
        raise CodecError(f"Expected <packageId>:<module>:<entity>, got {_describe(text)}")
    return Identifier(parts[0], parts[1], parts[2])


class _CompareKey:
    """Adapts LF generic comparison to `list.sort`."""

    __slots__ = ("value",)

    def __init__(self, entry: tuple[Any, Any]) -> None:
        self.value = entry[0]

    def __lt__(self, other: _CompareKey) -> bool:
        return compare(self.value, other.value) < 0


# ---------------------------------------------------------------------- scalar helpers
def _check_text(data: str) -> str:
    """LF Text is a sequence of Unicode scalar values: lone surrogates are not allowed."""
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:
        raise CodecError("Text contains a lone surrogate code point") from None
    return data



def decode_party(data: Any) -> str:
    if not isinstance(data, str):
        raise CodecError(f"Expected a JSON string for Party, got {_describe(data)}")
    if not data:
        raise CodecError("Daml-LF Party is empty")
    if len(data) > 255:
        raise CodecError(f"Daml-LF Party is too long (max: 255): {_describe(data)}")
    if not _PARTY_RE.fullmatch(data):
        raise CodecError(f"non expected character in Daml-LF Party {_describe(data)}")
    return data


def decode_int64(data: Any) -> int:
    if isinstance(data, bool):
        raise CodecError(f"Expected an Int64, got {_describe(data)}")
    if isinstance(data, int):
        value = data
    elif isinstance(data, str) and _INT64_RE.fullmatch(data):
        value = int(data)
    else:
        raise CodecError(f"Expected an Int64 (a JSON integer or a string of digits), got "
                         f"{_describe(data)}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise CodecError(f"Int64 out of range: {value}")
    return value


def decode_numeric(data: Any, scale: int) -> Decimal:
    """Accepts JSON numbers or strings; rounds extra fraction digits half-even to `scale`."""
    if isinstance(data, bool):
        raise CodecError(f"Expected a Numeric, got {_describe(data)}")
    if isinstance(data, Decimal):
        value = data
    elif isinstance(data, int):
        value = Decimal(data)
    elif isinstance(data, float):
        value = Decimal(repr(data))
    elif isinstance(data, str) and _NUMBER_RE.fullmatch(data):
        value = Decimal(data)
    else:
        raise CodecError(f"Expected a Numeric (a JSON number or numeric string), got "
                         f"{_describe(data)}")
    if not value.is_finite():
        raise CodecError(f"Expected a finite Numeric, got {_describe(data)}")
    try:
        with localcontext() as ctx:
            ctx.prec = 200
            result = value.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        raise CodecError(f"Numeric out of range for scale {scale}: {_describe(data)}") from None
    if result.scaleb(scale, _WIDE).copy_abs() >= 10**38:
        raise CodecError(f"Numeric out of range for scale {scale} (at most {38 - scale} integer "
                         f"digits): {_describe(data)}")
    return result


def encode_numeric(value: Decimal) -> str:
    """Plain notation, trailing zeros stripped, at least one fraction digit ("42.0")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0")
        if text.endswith("."):
            text += "0"
    else:
        text += ".0"
    if text.startswith("-") and Decimal(text) == 0:
        text = text[1:]
    return text


def decode_date(data: Any) -> int:
    match = _DATE_RE.fullmatch(data) if isinstance(data, str) else None
    shown = data if isinstance(data, str) else _describe(data)
    if match is None:
        raise CodecError(f"Invalid date: {shown} (expected YYYY-MM-DD)")
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise CodecError(f"Invalid date: {shown}") from None
    return (day - _EPOCH_DATE).days


def encode_date(days: int) -> str:
    day = date.fromordinal(_EPOCH_DATE.toordinal() + days)
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def decode_timestamp(data: Any) -> int:
    """ISO-8601 instant (UTC `Z` or an offset) to microseconds; sub-microsecond digits dropped."""
    match = _TIMESTAMP_RE.fullmatch(data) if isinstance(data, str) else None
    if match is None:
        raise CodecError(f"Invalid timestamp: {_describe(data)} (expected ISO-8601 like "
                         f"2020-01-01T00:00:00Z)")
    try:
        moment = datetime(int(match[1]), int(match[2]), int(match[3]), int(match[4]),
                          int(match[5]), int(match[6]), tzinfo=UTC)
    except ValueError:
        raise CodecError(f"Invalid timestamp: {_describe(data)}") from None
    micros = (moment - _EPOCH) // _ONE_MICRO
    if match[7]:
        micros += int((match[7] + "00000")[:6])
    zone = match[8]
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        micros -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * 1_000_000
    if not TIMESTAMP_MIN <= micros <= TIMESTAMP_MAX:
        raise CodecError(f"Timestamp out of range: {_describe(data)}")
    return micros


def encode_timestamp(micros: int) -> str:
    return timestamp_to_text(micros)


def decode_json(type_: Type, data: Any, packages: PackageSet) -> Any:
    """Decode JSON API JSON into an LF value of `type_` (raises `CodecError`)."""
    return JsonCodec(packages).decode(type_, data)


def encode_json(type_: Type, value: Any, packages: PackageSet) -> Any:
    """Encode an LF value of `type_` as JSON API JSON."""
    return JsonCodec(packages).encode(type_, value)


__all__ = ["CodecError", "JsonCodec", "decode_json", "encode_json", "parse_identifier",
           "substitute"]
