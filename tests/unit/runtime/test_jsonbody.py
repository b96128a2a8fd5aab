"""Client JSON within limits: every refusal is InvalidJson with a message that quotes no input."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cairn.runtime import jsonbody
from cairn.runtime.errors import InvalidRequest, PayloadTooLarge
from cairn.runtime.jsonbody import BodyTooLarge, InvalidJson, JsonLimits, parse
from cairn.runtime.settings import Settings

LIMITS = JsonLimits(max_bytes=4096, max_depth=8, max_number_chars=20, max_string_chars=50)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 4000, "nesting deeper than 8 levels"),
        ("[" * 9 + "]" * 9, "nesting deeper than 8 levels"),
        ('{"a":' * 9 + "1" + "}" * 9, "nesting deeper than 8 levels"),
        ("9" * 21, "a number longer than 20 characters"),
        ("1e999", "a number beyond 1e400 in magnitude or precision"),
        ("1e-999", "a number beyond 1e400 in magnitude or precision"),
        ("NaN", "NaN is not a JSON value"),
        ("[-Infinity]", "-Infinity is not a JSON value"),
        ('"a\\ud800b"', "a string holds a lone UTF-16 surrogate (not a Unicode scalar value)"),
        ('{"\\udc00":1}', "a string holds a lone UTF-16 surrogate (not a Unicode scalar value)"),
        ('["' + "x" * 51 + '"]', "a string longer than 50 characters"),
        ("{oops", "Expecting property name enclosed in double quotes at input index 1 "
                  "(line 1, position 2)"),
    ],
)
def test_refusals(text: str, reason: str) -> None:
    with pytest.raises(InvalidJson) as refused:
        parse(text, LIMITS)
    assert str(refused.value) == reason


def test_bytes_must_be_utf8_and_within_the_size_limit() -> None:
    with pytest.raises(InvalidJson, match="not valid UTF-8"):
        parse(b'"\xff"', LIMITS)
    with pytest.raises(BodyTooLarge, match=r"4097 bytes \(limit: 4096\)"):
        parse(b" " * 4097, LIMITS)


def test_accepted_values() -> None:
    assert parse('"\\ud83d\\ude00"', LIMITS) == "\U0001F600"  # a surrogate *pair* is fine
    assert parse("[" * 8 + "]" * 8, LIMITS) == [[[[[[[[]]]]]]]]
    assert parse('{"n": 1.25, "i": 18446744073709551616}', LIMITS) == {
        "n": 1.25, "i": 18446744073709551616,
    }
    assert parse("[0.1]", LIMITS, exact=True) == [Decimal("0.1")]


def test_parse_request_speaks_the_service_error_model() -> None:
    with pytest.raises(InvalidRequest) as bad:
        jsonbody.parse_request('"\\udfff"', "JSON parser error: ", limits=LIMITS)
    assert bad.value.messages == (
        "JSON parser error: a string holds a lone UTF-16 surrogate (not a Unicode scalar value)",
    )
    with pytest.raises(PayloadTooLarge):
        jsonbody.parse_request(b"[]" * 3000, "Invalid JSON body: ", limits=LIMITS)


def test_limits_are_settings() -> None:
    settings = Settings.from_env({
        "CAIRN_JSON_MAX_BYTES": "1000", "CAIRN_JSON_MAX_DEPTH": "3",
        "CAIRN_JSON_MAX_NUMBER_CHARS": "5", "CAIRN_JSON_MAX_STRING_CHARS": "7",
    })
    assert JsonLimits.from_settings(settings) == JsonLimits(1000, 3, 5, 7)
    assert JsonLimits.from_settings(Settings.from_env({})) == JsonLimits()
    with pytest.raises(ValueError, match="CAIRN_JSON_MAX_DEPTH must be a positive integer"):
        Settings.from_env({"CAIRN_JSON_MAX_DEPTH": "0"})
