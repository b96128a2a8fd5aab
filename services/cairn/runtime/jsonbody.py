"""Client JSON, parsed once and within limits: the one way a service reads a JSON request body.

Python's `json` accepts what a service must not: lone UTF-16 surrogate escapes (`"\\ud800"` parses
to a str that cannot be encoded again, so it fails later, far from the input), nesting deep enough
to exhaust the interpreter's recursion, integers too long for `int()`, and NaN/Infinity. `parse`
refuses all of these with `InvalidJson`, whose message quotes none of the input, and every limit
is a setting (`JsonLimits`, from `CAIRN_JSON_*`). Call sites wrap the reason in their API's words.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from cairn.runtime.errors import LONE_SURROGATE, InvalidRequest, PayloadTooLarge
from cairn.runtime.settings import Settings

# The largest decimal exponent a JSON number may have (beyond any double, DAML Numeric or int64).
MAX_EXPONENT = 400


class InvalidJson(ValueError):
    """The body is not acceptable JSON; the message says why without quoting it."""


@dataclass(frozen=True)
class JsonLimits:
    max_bytes: int = 16 << 20
    max_depth: int = 128
    max_number_chars: int = 100
    max_string_chars: int = 1 << 20

    @classmethod
    def from_settings(cls, settings: Settings) -> JsonLimits:
        return cls(
            max_bytes=settings.json_max_bytes,
            max_depth=settings.json_max_depth,
            max_number_chars=settings.json_max_number_chars,
            max_string_chars=settings.json_max_string_chars,
        )


@cache
def process_limits() -> JsonLimits:
    """This process's limits, read once from its settings."""
    return JsonLimits.from_settings(Settings.from_env())


class BodyTooLarge(InvalidJson):
    """Over `max_bytes`: the caller answers 413 rather than 400."""


def parse(data: bytes | str, limits: JsonLimits | None = None, *, exact: bool = False) -> Any:
    """The JSON value in `data`, or InvalidJson.

    `exact`: non-integral numbers become `Decimal` (the ledger keeps DAML Numerics exact);
    otherwise `float`. Integral numbers are always `int`.
    """
    limits = limits or process_limits()
    if len(data) > limits.max_bytes:
        raise BodyTooLarge(f"the body is {len(data)} bytes (limit: {limits.max_bytes})")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJson("the body is not valid UTF-8") from None
    try:
        value = json.loads(
            data,
            parse_int=_number(int, limits),
            parse_float=_number(Decimal if exact else float, limits),
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as err:
        raise InvalidJson(f"{err.msg} at input index {err.pos} "
                          f"(line {err.lineno}, position {err.colno})") from None
    except RecursionError:
        raise InvalidJson(f"nesting deeper than {limits.max_depth} levels") from None
    _check_tree(value, limits)
    return value


def parse_request(
    data: bytes | str, prefix: str, *, exact: bool = False, limits: JsonLimits | None = None
) -> Any:
    """`parse` for a handler: 400 (413 when too large) with `prefix` + the reason otherwise."""
    try:
        return parse(data, limits, exact=exact)
    except BodyTooLarge as err:
        raise PayloadTooLarge(f"{prefix}{err}") from None
    except InvalidJson as err:
        raise InvalidRequest(f"{prefix}{err}") from None


def _number(convert: Callable[[str], Any], limits: JsonLimits) -> Callable[[str], Any]:
    """A number hook for `json.loads`: length first (int() of 100,000 digits is refused by
    Python itself, and slow below that), then, for fractions and exponents, the magnitude."""

    def checked(text: str) -> Any:
        if len(text) > limits.max_number_chars:
            raise InvalidJson(f"a number longer than {limits.max_number_chars} characters")
        if convert is not int and abs(Decimal(text).adjusted()) > MAX_EXPONENT:
            raise InvalidJson(f"a number beyond 1e{MAX_EXPONENT} in magnitude or precision")
        return convert(text)

    return checked


def _no_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not a JSON value")


def _check_tree(root: Any, limits: JsonLimits) -> None:
    """Depth, string length and Unicode scalar values, iteratively (no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value, limits)
        elif isinstance(value, dict | list):
            if depth > limits.max_depth:
                raise InvalidJson(f"nesting deeper than {limits.max_depth} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_string(key, limits)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def _check_string(text: str, limits: JsonLimits) -> None:
    if len(text) > limits.max_string_chars:
        raise InvalidJson(f"a string longer than {limits.max_string_chars} characters")
    if LONE_SURROGATE.search(text):
        raise InvalidJson("a string holds a lone UTF-16 surrogate (not a Unicode scalar value)")

