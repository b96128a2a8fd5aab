"""The type-directed LF JSON codec: golden cases from the JSON API's LF value encoding and
round trips over the real types of the encoder test DARs."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cairn.ledger.codec import CodecError, JsonCodec
from cairn.ledger.lf.ast import Identifier, PrimType, TBuiltin, TCon, TNat, Type
from cairn.ledger.lf.dar import load_dar
from cairn.ledger.lf.packages import PackageSet
from cairn.ledger.lf.value import UNIT, Enum, GenMap, Record, Some, Variant

INT64 = TBuiltin(PrimType.INT64)
TEXT = TBuiltin(PrimType.TEXT)
PARTY = TBuiltin(PrimType.PARTY)
DATE = TBuiltin(PrimType.DATE)
TIMESTAMP = TBuiltin(PrimType.TIMESTAMP)
BOOL = TBuiltin(PrimType.BOOL)
UNIT_T = TBuiltin(PrimType.UNIT)


def numeric(scale: int) -> Type:
    return TBuiltin(PrimType.NUMERIC, (TNat(scale),))


def optional(inner: Type) -> Type:
    return TBuiltin(PrimType.OPTIONAL, (inner,))


def list_of(inner: Type) -> Type:
    return TBuiltin(PrimType.LIST, (inner,))


@pytest.fixture(scope="module")
def encoder_dar(shared_fixtures: Path) -> tuple[JsonCodec, str]:
    dar = load_dar((shared_fixtures / "daml" / "test-1.15.dar").read_bytes())
    return JsonCodec(PackageSet(dar.packages.values())), dar.main_package_id


@pytest.fixture(scope="module")
def codec(encoder_dar: tuple[JsonCodec, str]) -> JsonCodec:
    return encoder_dar[0]


def tcon(package_id: str, module: str, name: str, *args: Type) -> TCon:
    return TCon(Identifier(package_id, module, name), args)


# ------------------------------------------------------------------------------ scalars
@pytest.mark.parametrize(("json_in", "expected"), [
    (42, 42), ("42", 42), ("-42", -42), ("+7", 7),
    ("9223372036854775807", 2**63 - 1), (-(2**63), -(2**63)),
])
def test_int64_inputs(codec: JsonCodec, json_in: Any, expected: int) -> None:
    assert codec.decode(INT64, json_in) == expected
    assert codec.encode(INT64, expected) == str(expected)


@pytest.mark.parametrize("bad", ["42.3", "  42 ", 42.5, "9223372036854775808", True, None, "1e3"])
def test_int64_rejects(codec: JsonCodec, bad: Any) -> None:
    with pytest.raises(CodecError):
        codec.decode(INT64, bad)


@pytest.mark.parametrize(("json_in", "scale", "encoded"), [
    ("42", 10, "42.0"),
    (42, 10, "42.0"),
    ("0.3", 10, "0.3"),
    (Decimal("0.3"), 10, "0.3"),
    (0.3, 10, "0.3"),
    ("999.99", 10, "999.99"),
    ("2e3", 10, "2000.0"),
    ("+42", 10, "42.0"),
    ("-1.5", 2, "-1.5"),
    ("0.125", 2, "0.12"),  # half-even rounding of extra fraction digits
    ("0.135", 2, "0.14"),
    ("1", 0, "1.0"),
    ("9999999999999999999999999999.9999999999", 10, "9999999999999999999999999999.9999999999"),
])
def test_numeric_inputs_and_output(codec: JsonCodec, json_in: Any, scale: int,
                                   encoded: str) -> None:
    value = codec.decode(numeric(scale), json_in)
    assert value.as_tuple().exponent == -scale  # kept at exactly the type's scale
    assert codec.encode(numeric(scale), value) == encoded


@pytest.mark.parametrize(("bad", "scale"), [
    ("10000000000000000000000000000", 10),  # 29 integer digits > 38 - 10
    ("abc", 10), ("1.2.3", 10), ("", 10), (True, 10), ("NaN", 10), ([], 10),
])
def test_numeric_rejects(codec: JsonCodec, bad: Any, scale: int) -> None:
    with pytest.raises(CodecError):
        codec.decode(numeric(scale), bad)


def test_numeric_via_json_loads_with_decimal(codec: JsonCodec) -> None:
    data = json.loads('{"n": 1.1}', parse_float=Decimal)
    assert codec.encode(numeric(10), codec.decode(numeric(10), data["n"])) == "1.1"


@pytest.mark.parametrize(("text", "days"), [
    ("1970-01-01", 0), ("2019-06-18", 18065), ("0001-01-01", -719162), ("9999-12-31", 2932896),
    ("2020-02-29", 18321),
])
def test_dates(codec: JsonCodec, text: str, days: int) -> None:
    assert codec.decode(DATE, text) == days
    assert codec.encode(DATE, days) == text


@pytest.mark.parametrize("bad", ["2019-02-29", "2019-13-01", "19-01-01", "2019-1-1", 20190101])
def test_date_rejects(codec: JsonCodec, bad: Any) -> None:
    with pytest.raises(CodecError, match="Invalid date"):
        codec.decode(DATE, bad)


@pytest.mark.parametrize(("text", "micros", "encoded"), [
    ("1970-01-01T00:00:00Z", 0, "1970-01-01T00:00:00Z"),
    ("2019-06-18T08:59:33.123Z", 1560848373123000, "2019-06-18T08:59:33.123Z"),
    ("2019-06-18T08:59:33.123456Z", 1560848373123456, "2019-06-18T08:59:33.123456Z"),
    ("2019-06-18T08:59:33.123456789Z", 1560848373123456, "2019-06-18T08:59:33.123456Z"),
    ("2019-06-18T10:59:33+02:00", 1560848373000000, "2019-06-18T08:59:33Z"),
    ("0001-01-01T00:00:00Z", -62135596800000000, "0001-01-01T00:00:00Z"),
    ("1969-12-31T23:59:59.5Z", -500000, "1969-12-31T23:59:59.500Z"),
])
def test_timestamps(codec: JsonCodec, text: str, micros: int, encoded: str) -> None:
    assert codec.decode(TIMESTAMP, text) == micros
    assert codec.encode(TIMESTAMP, micros) == encoded


@pytest.mark.parametrize("bad", ["2019-06-18T08:59:33", "2019-06-18 08:59:33Z", "yesterday", 0])
def test_timestamp_rejects(codec: JsonCodec, bad: Any) -> None:
    with pytest.raises(CodecError, match="Invalid timestamp"):
        codec.decode(TIMESTAMP, bad)


def test_parties(codec: JsonCodec) -> None:
    assert codec.decode(PARTY, "Alice::1220abcd") == "Alice::1220abcd"
    with pytest.raises(CodecError, match="Daml-LF Party is empty"):
        codec.decode(PARTY, "")
    with pytest.raises(CodecError, match="too long"):
        codec.decode(PARTY, "a" * 256)
    with pytest.raises(CodecError):
        codec.decode(PARTY, "Carol-!")


def test_text_bool_unit_contract_id(codec: JsonCodec) -> None:
    assert codec.decode(TEXT, "O\u02bcReilly & co") == "O\u02bcReilly & co"
    assert codec.decode(BOOL, False) is False
    assert codec.decode(UNIT_T, {}) is UNIT
    assert codec.encode(UNIT_T, UNIT) == {}
    cid_type = TBuiltin(PrimType.CONTRACT_ID, (TEXT,))
    assert codec.decode(cid_type, "#1:0") == "#1:0"
    for bad_value, bad_type in [(1, TEXT), ("true", BOOL), ([], UNIT_T), ("", cid_type)]:
        with pytest.raises(CodecError):
            codec.decode(bad_type, bad_value)


# ------------------------------------------------------------------------------ containers
@pytest.mark.parametrize(("json_in", "value", "encoded"), [
    (None, None, None),
    (42, Some(42), "42"),
    ("42", Some(42), "42"),
])
def test_optional(codec: JsonCodec, json_in: Any, value: Any, encoded: Any) -> None:
    assert codec.decode(optional(INT64), json_in) == value
    assert codec.encode(optional(INT64), value) == encoded


@pytest.mark.parametrize(("json_in", "value", "encoded"), [
    (None, None, None),
    ([], Some(None), []),
    ([42], Some(Some(42)), ["42"]),
])
def test_nested_optional(codec: JsonCodec, json_in: Any, value: Any, encoded: Any) -> None:
    nested = optional(optional(INT64))
    assert codec.decode(nested, json_in) == value
    assert codec.encode(nested, value) == encoded


def test_triple_optional(codec: JsonCodec) -> None:
    triple = optional(optional(optional(INT64)))
    cases: list[tuple[Any, Any]] = [
        (None, None), ([], Some(None)), ([[]], Some(Some(None))), ([[1]], Some(Some(Some(1)))),
    ]
    for json_in, value in cases:
        assert codec.decode(triple, json_in) == value
        assert json.loads(json.dumps(codec.encode(triple, value))) == (
            json_in if not isinstance(json_in, list) or json_in != [[1]] else [["1"]])
    with pytest.raises(CodecError, match="nested Optional"):
        codec.decode(triple, [1, 2])


def test_lists_and_text_maps(codec: JsonCodec) -> None:
    assert codec.decode(list_of(INT64), [1, "2"]) == (1, 2)
    assert codec.encode(list_of(INT64), (1, 2)) == ["1", "2"]
    text_map = TBuiltin(PrimType.TEXTMAP, (INT64,))
    value = codec.decode(text_map, {"b": 2, "a": 1})
    assert value == {"a": 1, "b": 2}
    assert list(codec.encode(text_map, value)) == ["a", "b"]
    with pytest.raises(CodecError):
        codec.decode(list_of(INT64), {"0": 1})


def test_gen_map(codec: JsonCodec) -> None:
    gen_map = TBuiltin(PrimType.GENMAP, (INT64, TEXT))
    value = codec.decode(gen_map, [[2, "two"], ["1", "one"]])
    assert value == GenMap(((1, "one"), (2, "two")))
    assert codec.encode(gen_map, value) == [["1", "one"], ["2", "two"]]
    with pytest.raises(CodecError, match="duplicate key: 1"):
        codec.decode(gen_map, [[1, "a"], [1, "b"]])
    with pytest.raises(CodecError):
        codec.decode(gen_map, {"1": "one"})


# ------------------------------------------------------------------------------ user types
def test_records_as_object_or_array(encoder_dar: tuple[JsonCodec, str]) -> None:
    codec, pid = encoder_dar
    pair = tcon(pid, "RecordMod", "Pair", INT64, numeric(10))
    from_object = codec.decode(pair, {"fst": "1", "snd": "2.5", "extra": "ignored"})
    from_array = codec.decode(pair, [1, 2.5])
    assert isinstance(from_object, Record)
    assert from_object == from_array
    assert codec.encode(pair, from_object) == {"fst": "1", "snd": "2.5"}
    with pytest.raises(CodecError, match="Missing required field 'snd'"):
        codec.decode(pair, {"fst": 1})
    with pytest.raises(CodecError, match="expected 2, found 1"):
        codec.decode(pair, [1])


def test_missing_optional_record_field_is_none(encoder_dar: tuple[JsonCodec, str]) -> None:
    codec, pid = encoder_dar
    box = tcon(pid, "OptionMod", "Box")
    value = codec.decode(box, {"party": "Alice"})
    assert value.get("x") is None
    assert codec.encode(box, value) == {"x": None, "party": "Alice"}


def test_variants_and_enums(encoder_dar: tuple[JsonCodec, str]) -> None:
    codec, pid = encoder_dar
    either = tcon(pid, "VariantMod", "Either", INT64, numeric(10))
    right = codec.decode(either, {"tag": "Right", "value": "1.5"})
    assert right == Variant(either.tycon, "Right", Decimal("1.5000000000"), 1)
    assert codec.encode(either, right) == {"tag": "Right", "value": "1.5"}
    with pytest.raises(CodecError, match="Unknown constructor"):
        codec.decode(either, {"tag": "Middle", "value": 1})
    with pytest.raises(CodecError, match="requires a \"value\""):
        codec.decode(either, {"tag": "Left"})
    color = tcon(pid, "EnumMod", "Color")
    assert codec.decode(color, "Green") == Enum(color.tycon, "Green", 1)
    assert codec.encode(color, Enum(color.tycon, "Blue", 2)) == "Blue"
    with pytest.raises(CodecError, match="Red, Green, Blue"):
        codec.decode(color, "Purple")


def test_recursive_variant(encoder_dar: tuple[JsonCodec, str]) -> None:
    codec, pid = encoder_dar
    template = tcon(pid, "EnumMod", "NestedEnumTemplate")
    payload = {
        "optionalColor": {"tag": "SomeColor", "value": "Red"},
        "coloredTree": {"tag": "Node", "value": {
            "color": "Blue",
            "left": {"tag": "Leaf", "value": {}},
            "right": {"tag": "Node", "value": {"color": "Green",
                                               "left": {"tag": "Leaf", "value": {}},
                                               "right": {"tag": "Leaf", "value": {}}}},
        }},
        "party": "Alice",
    }
    assert codec.encode(template, codec.decode(template, payload)) == payload


def test_field_errors_name_the_path(encoder_dar: tuple[JsonCodec, str]) -> None:
    codec, pid = encoder_dar
    box = tcon(pid, "Int64Mod", "Box")
    with pytest.raises(CodecError, match=r"Int64Mod:Box\.x: Expected an Int64"):
        codec.decode(box, {"x": "forty-two", "party": "Alice"})


def test_gen_map_of_records_to_variants(encoder_dar: tuple[JsonCodec, str]) -> None:
    codec, pid = encoder_dar
    box = tcon(pid, "GenMapMod", "Box")
    payload = {"x": [[{"fst": "2", "snd": "1.0"}, {"tag": "Left", "value": "7"}],
                     [{"fst": "1", "snd": "3.25"}, {"tag": "Right", "value": "0.5"}]],
               "party": "Alice"}
    encoded = codec.encode(box, codec.decode(box, payload))
    # Output entries are ordered by key.
    assert encoded["x"] == [payload["x"][1], payload["x"][0]]


# ------------------------------------------------------------------------------ reference table
# Cases of the JSON API codec's own table tests (ApiCodecCompressedSpec): canonical output,
# then alternative inputs that must decode to the same value.
OOI = optional(optional(INT64))
OOOI = optional(OOI)
REFERENCE_SUCCESSES: list[tuple[str, Type, list[str]]] = [
    ('"0000000000000000000000000000000000000000000000000000000000000000000123"',
     TBuiltin(PrimType.CONTRACT_ID, (UNIT_T,)), []),
    ('"42.0"', numeric(10), ['"42"', "42", "42.0", '"+42"']),
    ('"2000.0"', numeric(10), ['"2000"', "2000", "2e3"]),
    ('"0.3"', numeric(10), ['"0.30000000000000004"', "0.30000000000000004"]),
    ('"9999999999999999999999999999.9999999999"', numeric(10),
     ["9999999999999999999999999999.9999999999"]),
    ('"0.1234512346"', numeric(10),
     ["0.12345123455", "0.12345123465", '"0.12345123455"', '"0.12345123465"']),
    ('"0.1234512345"', numeric(10),
     ["0.123451234549", "0.12345123445001", '"0.123451234549"', '"0.12345123445001"']),
    ('"1990-11-09T04:30:23.123456Z"', TIMESTAMP, ['"1990-11-09T04:30:23.1234569Z"']),
    ('"1970-01-01T00:00:00Z"', TIMESTAMP, []),
    ('"1969-12-31T23:00:00Z"', TIMESTAMP, ['"1970-01-01T00:00:00+01:00"']),
    ('"42"', INT64, ['"+42"', "42"]),
    ('"0"', INT64, ["-0", '"+0"', '"-0"', "0"]),
    ('"Alice"', PARTY, []),
    ("{}", UNIT_T, []),
    ('"2019-06-18"', DATE, []),
    ('"9999-12-31"', DATE, []),
    ('"0001-01-01"', DATE, []),
    ('"abc"', TEXT, []),
    ("true", BOOL, []),
    ('["1", "2", "3"]', list_of(INT64), ["[1, 2, 3]"]),
    ('{"a": "b", "c": "d"}', TBuiltin(PrimType.TEXTMAP, (TEXT,)), []),
    ('[["a", "b"], ["c", "d"]]', TBuiltin(PrimType.GENMAP, (TEXT, TEXT)),
     ['[["c", "d"], ["a", "b"]]']),
    ('"42"', optional(INT64), ["42"]),
    ("null", optional(INT64), []),
    ("null", OOI, []),
    ("[]", OOI, ["[null]"]),
    ('["42"]', OOI, ["[42]"]),
    ("null", OOOI, []),
    ("[]", OOOI, ["[null]"]),
    ("[[]]", OOOI, ["[[null]]"]),
    ('[["42"]]', OOOI, ["[[42]]"]),
]


@pytest.mark.parametrize(("canonical", "type_", "alternates"), REFERENCE_SUCCESSES)
def test_reference_successes(codec: JsonCodec, canonical: str, type_: Type,
                             alternates: list[str]) -> None:
    value = codec.decode(type_, json.loads(canonical, parse_float=Decimal))
    assert codec.encode(type_, value) == json.loads(canonical)
    for alternate in alternates:
        assert codec.decode(type_, json.loads(alternate, parse_float=Decimal)) == value


REFERENCE_FAILURES: list[tuple[str, Type, str]] = [
    ("42.3", INT64, ""),
    ('"42.3"', INT64, ""),
    ("9223372036854775808", INT64, ""),
    ("-9223372036854775809", INT64, ""),
    ('"garbage"', INT64, ""),
    ('"   42 "', INT64, ""),
    ('"1970-01-01T00:00:00"', TIMESTAMP, ""),
    ('"1970-01-01T00:00:00+01:00[Europe/Paris]"', TIMESTAMP, ""),
    ('"0000-01-01"', DATE, "Invalid date: 0000-01-01"),
    ('"9999-99-99"', DATE, "Invalid date: 9999-99-99"),
    ('"9999-12-32"', DATE, "Invalid date: 9999-12-32"),
    ('"9999-13-31"', DATE, "Invalid date: 9999-13-31"),
    ('"10000-01-01"', DATE, "Invalid date: 10000-01-01"),
    ('"1-01-01"', DATE, "Invalid date: 1-01-01"),
    ('"0001-02-29"', DATE, "Invalid date: 0001-02-29"),
    ('"not-a-date"', DATE, "Invalid date: not-a-date"),
    ('{"a": "b", "c": "d"}', TBuiltin(PrimType.GENMAP, (TEXT, TEXT)), ""),
    ('[["a", "b"], ["a", "d"]]', TBuiltin(PrimType.GENMAP, (TEXT, TEXT)), "duplicate key: "),
    ('""', PARTY, "Daml-LF Party is empty"),
    ('"' + "a" * 256 + '"', PARTY, "Daml-LF Party is too long"),
]


@pytest.mark.parametrize(("serialized", "type_", "message"), REFERENCE_FAILURES)
def test_reference_failures(codec: JsonCodec, serialized: str, type_: Type,
                            message: str) -> None:
    with pytest.raises(CodecError) as raised:
        codec.decode(type_, json.loads(serialized, parse_float=Decimal))
    assert message in str(raised.value)


def test_record_array_form_length_errors(encoder_dar: tuple[JsonCodec, str]) -> None:
    codec, pid = encoder_dar
    pair = tcon(pid, "RecordMod", "Pair", INT64, TEXT)
    with pytest.raises(CodecError, match="expected 2, found 3"):
        codec.decode(pair, [1, "a", "extra"])


def test_text_rejects_lone_surrogates(codec: JsonCodec) -> None:
    assert codec.decode(TEXT, json.loads('"\\ud83d\\ude00"')) == "\U0001f600"
    with pytest.raises(CodecError, match="surrogate"):
        codec.decode(TEXT, json.loads('"\\ud800"'))
