"""DAML-LF builtin functions that are plain functions of their (already evaluated) arguments.

Builtins that call back into user code (FOLDL, FOLDR, EQUAL_LIST, ANY_EXCEPTION_MESSAGE) are
run by the interpreter itself; they are registered here with a `FoldMarker` implementation so
that decoding knows their arity. Numeric builtins take their `nat` type arguments as leading integer
arguments (see `ast`). Numeric values are `Decimal`s quantized to their scale, so scales
survive arithmetic and `NUMERIC_TO_TEXT` can print every scale digit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Context,
    Decimal,
    localcontext,
)
from typing import Any

from cairn.ledger.lf.ast import Builtin
from cairn.ledger.lf.errors import ArithmeticFailure, UserError
from cairn.ledger.lf.value import GenMap, Some, Struct, TypeRep, compare

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
NUMERIC_MAX_UNSCALED = 10**38
TIMESTAMP_MIN = -62135596800000000  # 0001-01-01T00:00:00Z
TIMESTAMP_MAX = 253402300799999999  # 9999-12-31T23:59:59.999999Z
DATE_MIN = -719162  # 0001-01-01
DATE_MAX = 2932896  # 9999-12-31
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONTEXT = Context(prec=200)
_BIG = Context(prec=1 << 17)
_PARTY_RE = re.compile(r"[a-zA-Z0-9:\-_ ]{1,255}")
_INT_RE = re.compile(r"[+-]?\d+")
_NUMERIC_TEXT_RE = re.compile(r"[+-]?\d+(\.\d+)?")


class FoldMarker:
    """Placeholder implementation for builtins the interpreter runs itself."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any) -> Any:
        raise RuntimeError(f"{self.name} must be run by the interpreter")


def _fail(name: str, *args: Any) -> ArithmeticFailure:
    rendered = " ".join(str(a) for a in args)
    return ArithmeticFailure(f"ArithmeticError while evaluating ({name} {rendered}).")


# ----------------------------------------------------------------------------- Int64
def _int64(name: str, value: int, *args: Any) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise _fail(name, *args)
    return value


def add_int64(a: int, b: int) -> int:
    return _int64("ADD_INT64", a + b, a, b)


def sub_int64(a: int, b: int) -> int:
    return _int64("SUB_INT64", a - b, a, b)


def mul_int64(a: int, b: int) -> int:
    return _int64("MUL_INT64", a * b, a, b)


def div_int64(a: int, b: int) -> int:
    if b == 0:
        raise _fail("DIV_INT64", a, b)
    q = abs(a) // abs(b)
    return _int64("DIV_INT64", q if (a >= 0) == (b > 0) else -q, a, b)


def mod_int64(a: int, b: int) -> int:
    if b == 0:
        raise _fail("MOD_INT64", a, b)
    r = abs(a) % abs(b)
    return r if a >= 0 else -r


def exp_int64(a: int, b: int) -> int:
    if b < 0:
        raise _fail("EXP_INT64", a, b)
    if abs(a) > 1 and b > 64:
        raise _fail("EXP_INT64", a, b)
    return _int64("EXP_INT64", a**b, a, b)


def text_to_int64(text: str) -> Any:
    if not _INT_RE.fullmatch(text):
        return None
    value = int(text)
    return Some(value) if INT64_MIN <= value <= INT64_MAX else None


# ----------------------------------------------------------------------------- Numeric
def _quantum(scale: int) -> Decimal:
    return Decimal(1).scaleb(-scale)


def numeric(name: str, scale: int, value: Decimal, *args: Any) -> Decimal:
    """Round `value` half-even to `scale` and check the 38-digit bound."""
    with localcontext(_CONTEXT):
        result = value.quantize(_quantum(scale), rounding=ROUND_HALF_EVEN)
    if result.scaleb(scale, _CONTEXT).copy_abs() >= NUMERIC_MAX_UNSCALED:
        raise _fail(name, *args)
    return result


def _unscaled(value: Decimal, scale: int) -> int:
    return int(value.scaleb(scale, _CONTEXT))


def _div_round_half_even(numerator: int, denominator: int) -> int:
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q % 2 == 1):
        q += 1
    return q


def _from_unscaled(name: str, unscaled: int, scale: int, *args: Any) -> Decimal:
    if abs(unscaled) >= NUMERIC_MAX_UNSCALED:
        raise _fail(name, *args)
    return Decimal(unscaled).scaleb(-scale, _CONTEXT)


def add_numeric(n: int, a: Decimal, b: Decimal) -> Decimal:
    with localcontext(_CONTEXT):
        return numeric("ADD_NUMERIC", n, a + b, a, b)


def sub_numeric(n: int, a: Decimal, b: Decimal) -> Decimal:
    with localcontext(_CONTEXT):
        return numeric("SUB_NUMERIC", n, a - b, a, b)


def mul_numeric(n1: int, n2: int, n3: int, a: Decimal, b: Decimal) -> Decimal:
    product = _unscaled(a, n1) * _unscaled(b, n2)
    shift = n3 - n1 - n2
    if shift >= 0:
        unscaled = product * 10**shift
    else:
        unscaled = _div_round_half_even(product, 10**-shift)
    return _from_unscaled("MUL_NUMERIC", unscaled, n3, a, b)


def div_numeric(n1: int, n2: int, n3: int, a: Decimal, b: Decimal) -> Decimal:
    ua, ub = _unscaled(a, n1), _unscaled(b, n2)
    if ub == 0:
        raise _fail("DIV_NUMERIC", a, b)
    # a/b * 10^n3 = ua * 10^(n2 + n3 - n1) / ub
    shift = n2 + n3 - n1
    if shift >= 0:
        unscaled = _div_round_half_even(ua * 10**shift, ub)
    else:
        unscaled = _div_round_half_even(ua, ub * 10**-shift)
    return _from_unscaled("DIV_NUMERIC", unscaled, n3, a, b)


def round_numeric(n: int, digits: int, x: Decimal) -> Decimal:
    if not -37 <= digits <= 37:
        raise _fail("ROUND_NUMERIC", digits, x)
    with localcontext(_CONTEXT):
        rounded = x.quantize(_quantum(digits), rounding=ROUND_HALF_EVEN)
        return numeric("ROUND_NUMERIC", n, rounded, digits, x)


def cast_numeric(n1: int, n2: int, x: Decimal) -> Decimal:
    with localcontext(_CONTEXT):
        result = x.quantize(_quantum(n2), rounding=ROUND_HALF_EVEN)
        if result != x:
            raise _fail("CAST_NUMERIC", x)
        return numeric("CAST_NUMERIC", n2, result, x)


def shift_numeric(n1: int, n2: int, x: Decimal) -> Decimal:
    return _from_unscaled("SHIFT_NUMERIC", _unscaled(x, n1), n2, x)


def numeric_to_text(n: int, x: Decimal) -> str:
    text = format(x.quantize(_quantum(n), context=_CONTEXT), "f")
    return text if "." in text else text + "."


def text_to_numeric(n: int, text: str) -> Any:
    if not _NUMERIC_TEXT_RE.fullmatch(text):
        return None
    with localcontext(_CONTEXT):
        value = Decimal(text)
        result = value.quantize(_quantum(n))
        if result != value or result.scaleb(n, _CONTEXT).copy_abs() >= NUMERIC_MAX_UNSCALED:
            return None
    return Some(result)


def int64_to_numeric(n: int, x: int) -> Decimal:
    return _from_unscaled("INT64_TO_NUMERIC", x * 10**n, n, x)


def numeric_to_int64(n: int, x: Decimal) -> int:
    truncated = int(x)  # int() truncates toward zero, as the spec requires
    return _int64("NUMERIC_TO_INT64", truncated, x)


# ----------------------------------------------------------------------------- BigNumeric
_ROUNDING = [ROUND_UP, ROUND_DOWN, ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, ROUND_HALF_DOWN,
             ROUND_HALF_EVEN, None]
BIGNUMERIC_MAX_SCALE = 1 << 15


def _big(name: str, value: Decimal, *args: Any) -> Decimal:
    value = value.normalize(_BIG) if value else Decimal(0)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    digits = len(value.as_tuple().digits)
    if -exponent > BIGNUMERIC_MAX_SCALE or digits + exponent > BIGNUMERIC_MAX_SCALE:
        raise _fail(name, *args)
    return value


def scale_bignumeric(x: Decimal) -> int:
    exponent = x.normalize(_BIG).as_tuple().exponent if x else 0
    assert isinstance(exponent, int)
    return -exponent


def precision_bignumeric(x: Decimal) -> int:
    return len(x.normalize(_BIG).as_tuple().digits) if x else 0


def add_bignumeric(a: Decimal, b: Decimal) -> Decimal:
    return _big("ADD_BIGNUMERIC", _BIG.add(a, b), a, b)


def sub_bignumeric(a: Decimal, b: Decimal) -> Decimal:
    return _big("SUB_BIGNUMERIC", _BIG.subtract(a, b), a, b)


def mul_bignumeric(a: Decimal, b: Decimal) -> Decimal:
    return _big("MUL_BIGNUMERIC", _BIG.multiply(a, b), a, b)


def div_bignumeric(scale: int, mode: int, a: Decimal, b: Decimal) -> Decimal:
    if b == 0:
        raise _fail("DIV_BIGNUMERIC", scale, mode, a, b)
    context = _BIG
    exact = context.divide(a, b)
    rounding = _ROUNDING[mode]
    if rounding is None:  # UNNECESSARY: the division must be exact at that scale
        result = exact.quantize(_quantum(scale), context=context)
        if context.multiply(result, b) != a:
            raise _fail("DIV_BIGNUMERIC", scale, mode, a, b)
        return _big("DIV_BIGNUMERIC", result)
    return _big("DIV_BIGNUMERIC", exact.quantize(_quantum(scale), rounding=rounding,
                                                 context=context), a, b)


def shift_right_bignumeric(shift: int, x: Decimal) -> Decimal:
    return _big("SHIFT_RIGHT_BIGNUMERIC", x.scaleb(-shift, _BIG), shift, x)


def bignumeric_to_numeric(n: int, x: Decimal) -> Decimal:
    with localcontext(_CONTEXT):
        result = x.quantize(_quantum(n))
        if result != x:
            raise _fail("BIGNUMERIC_TO_NUMERIC", x)
        return numeric("BIGNUMERIC_TO_NUMERIC", n, result, x)


def numeric_to_bignumeric(n: int, x: Decimal) -> Decimal:
    return x.normalize(_BIG) if x else Decimal(0)


def bignumeric_to_text(x: Decimal) -> str:
    text = format(x, "f")
    return text if "." in text else text + ".0"


# ----------------------------------------------------------------------------- Text
def _check_code_point(cp: int) -> str:
    if not (0 <= cp <= 0x10FFFF) or 0xD800 <= cp <= 0xDFFF:
        raise UserError(f"invalid code point {cp}")
    return chr(cp)


def text_to_party(text: str) -> Any:
    return Some(text) if _PARTY_RE.fullmatch(text) else None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- time
def timestamp_to_text(micros: int) -> str:
    m = EPOCH + timedelta(microseconds=micros)
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    fraction = micros % 1_000_000
    if fraction:
        digits = f"{fraction:06d}"
        text += "." + (digits[:3] if digits.endswith("000") else digits)
    return text + "Z"


def date_to_text(days: int) -> str:
    day = EPOCH.date() + timedelta(days=days)
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def unix_micros_to_timestamp(micros: int) -> int:
    if not TIMESTAMP_MIN <= micros <= TIMESTAMP_MAX:
        raise _fail("UNIX_MICROSECONDS_TO_TIMESTAMP", micros)
    return micros


def unix_days_to_date(days: int) -> int:
    if not DATE_MIN <= days <= DATE_MAX:
        raise _fail("UNIX_DAYS_TO_DATE", days)
    return days


# ----------------------------------------------------------------------------- maps
def textmap_insert(key: str, value: Any, mapping: dict[str, Any]) -> dict[str, Any]:
    updated = dict(mapping)
    updated[key] = value
    return updated


def textmap_delete(key: str, mapping: dict[str, Any]) -> dict[str, Any]:
    if key not in mapping:
        return mapping
    updated = dict(mapping)
    del updated[key]
    return updated


def textmap_to_list(mapping: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(Struct(("key", "value"), (k, mapping[k])) for k in sorted(mapping))


def _genmap_find(entries: tuple[tuple[Any, Any], ...], key: Any) -> tuple[int, bool]:
    lo, hi = 0, len(entries)
    while lo < hi:
        mid = (lo + hi) // 2
        c = compare(entries[mid][0], key)
        if c == 0:
            return mid, True
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    return lo, False


def genmap_insert(key: Any, value: Any, mapping: GenMap) -> GenMap:
    index, found = _genmap_find(mapping.entries, key)
    entries = mapping.entries
    tail = entries[index + 1:] if found else entries[index:]
    return GenMap((*entries[:index], (key, value), *tail))


def genmap_lookup(key: Any, mapping: GenMap) -> Any:
    index, found = _genmap_find(mapping.entries, key)
    return Some(mapping.entries[index][1]) if found else None


def genmap_delete(key: Any, mapping: GenMap) -> GenMap:
    index, found = _genmap_find(mapping.entries, key)
    if not found:
        return mapping
    return GenMap(mapping.entries[:index] + mapping.entries[index + 1:])


def _error(message: str) -> Any:
    raise UserError(message)


def _cmp(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    return lambda a, b: test(compare(a, b))


def _typed_cmp(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    return lambda a, b: test((a > b) - (a < b))


def _numeric_cmp(test: Callable[[int], bool]) -> Callable[[int, Any, Any], bool]:
    return lambda n, a, b: test((a > b) - (a < b))


def _LEQ(c: int) -> bool:
    return c <= 0


def _LESS(c: int) -> bool:
    return c < 0


def _GEQ(c: int) -> bool:
    return c >= 0


def _GREATER(c: int) -> bool:
    return c > 0


def _EQUAL(c: int) -> bool:
    return c == 0


# wire number -> (name, arity, implementation). Arity counts runtime nat arguments.
_TABLE: dict[int, tuple[str, int, Callable[..., Any]]] = {
    107: ("ADD_NUMERIC", 3, add_numeric),
    108: ("SUB_NUMERIC", 3, sub_numeric),
    109: ("MUL_NUMERIC_LEGACY", 5, mul_numeric),
    110: ("DIV_NUMERIC_LEGACY", 5, div_numeric),
    111: ("ROUND_NUMERIC", 3, round_numeric),
    121: ("CAST_NUMERIC_LEGACY", 3, cast_numeric),
    122: ("SHIFT_NUMERIC_LEGACY", 3, shift_numeric),
    7: ("ADD_INT64", 2, add_int64),
    8: ("SUB_INT64", 2, sub_int64),
    9: ("MUL_INT64", 2, mul_int64),
    10: ("DIV_INT64", 2, div_int64),
    11: ("MOD_INT64", 2, mod_int64),
    12: ("EXP_INT64", 2, exp_int64),
    20: ("FOLDL", 3, FoldMarker("FOLDL")),
    21: ("FOLDR", 3, FoldMarker("FOLDR")),
    96: ("TEXTMAP_EMPTY", 0, dict),
    97: ("TEXTMAP_INSERT", 3, textmap_insert),
    98: ("TEXTMAP_LOOKUP", 2, lambda k, m: Some(m[k]) if k in m else None),
    99: ("TEXTMAP_DELETE", 2, textmap_delete),
    100: ("TEXTMAP_TO_LIST", 1, textmap_to_list),
    101: ("TEXTMAP_SIZE", 1, len),
    124: ("GENMAP_EMPTY", 0, lambda: GenMap(())),
    125: ("GENMAP_INSERT", 3, genmap_insert),
    126: ("GENMAP_LOOKUP", 2, genmap_lookup),
    127: ("GENMAP_DELETE", 2, genmap_delete),
    128: ("GENMAP_KEYS", 1, lambda m: tuple(k for k, _ in m.entries)),
    129: ("GENMAP_VALUES", 1, lambda m: tuple(v for _, v in m.entries)),
    130: ("GENMAP_SIZE", 1, lambda m: len(m.entries)),
    23: ("EXPLODE_TEXT", 1, tuple),
    24: ("APPEND_TEXT", 2, lambda a, b: a + b),
    25: ("ERROR", 1, _error),
    147: ("ANY_EXCEPTION_MESSAGE", 1, FoldMarker("ANY_EXCEPTION_MESSAGE")),
    57: ("INT64_TO_TEXT", 1, str),
    116: ("NUMERIC_TO_TEXT", 2, numeric_to_text),
    60: ("TEXT_TO_TEXT", 1, lambda t: t),
    61: ("TIMESTAMP_TO_TEXT", 1, timestamp_to_text),
    71: ("DATE_TO_TEXT", 1, date_to_text),
    63: ("PARTY_TO_QUOTED_TEXT", 1, lambda p: f"'{p}'"),
    94: ("PARTY_TO_TEXT", 1, lambda p: p),
    95: ("TEXT_TO_PARTY", 1, text_to_party),
    103: ("TEXT_TO_INT64", 1, text_to_int64),
    117: ("TEXT_TO_NUMERIC_LEGACY", 2, text_to_numeric),
    136: ("CONTRACT_ID_TO_TEXT", 1, lambda cid: None),
    93: ("SHA256_TEXT", 1, sha256_text),
    72: ("DATE_TO_UNIX_DAYS", 1, lambda d: d),
    73: ("UNIX_DAYS_TO_DATE", 1, unix_days_to_date),
    74: ("TIMESTAMP_TO_UNIX_MICROSECONDS", 1, lambda t: t),
    75: ("UNIX_MICROSECONDS_TO_TIMESTAMP", 1, unix_micros_to_timestamp),
    118: ("INT64_TO_NUMERIC_LEGACY", 2, int64_to_numeric),
    119: ("NUMERIC_TO_INT64", 2, numeric_to_int64),
    78: ("IMPLODE_TEXT", 1, lambda parts: "".join(parts)),
    87: ("EQUAL_LIST", 3, FoldMarker("EQUAL_LIST")),
    123: ("EQUAL_TYPE_REP", 2, lambda a, b: isinstance(a, TypeRep) and a == b),
    131: ("EQUAL", 2, _cmp(_EQUAL)),
    132: ("LESS_EQ", 2, _cmp(_LEQ)),
    133: ("LESS", 2, _cmp(_LESS)),
    134: ("GREATER_EQ", 2, _cmp(_GEQ)),
    135: ("GREATER", 2, _cmp(_GREATER)),
    88: ("TRACE", 2, lambda message, value: value),
    102: ("COERCE_CONTRACT_ID", 1, lambda cid: cid),
    105: ("CODE_POINTS_TO_TEXT", 1, lambda cps: "".join(_check_code_point(c) for c in cps)),
    106: ("TEXT_TO_CODE_POINTS", 1, lambda t: tuple(ord(c) for c in t)),
    137: ("SCALE_BIGNUMERIC", 1, scale_bignumeric),
    138: ("PRECISION_BIGNUMERIC", 1, precision_bignumeric),
    139: ("ADD_BIGNUMERIC", 2, add_bignumeric),
    140: ("SUB_BIGNUMERIC", 2, sub_bignumeric),
    141: ("MUL_BIGNUMERIC", 2, mul_bignumeric),
    142: ("DIV_BIGNUMERIC", 4, div_bignumeric),
    143: ("SHIFT_RIGHT_BIGNUMERIC", 2, shift_right_bignumeric),
    144: ("BIGNUMERIC_TO_NUMERIC_LEGACY", 2, bignumeric_to_numeric),
    145: ("NUMERIC_TO_BIGNUMERIC", 2, numeric_to_bignumeric),
    146: ("BIGNUMERIC_TO_TEXT", 1, bignumeric_to_text),
}

# Type-specific comparisons of LF < 1.11 (Numeric ones take the scale first).
for _suffix, _numbers in {
    "INT64": (33, 39, 45, 51, 79),
    "TEXT": (36, 42, 48, 54, 81),
    "TIMESTAMP": (37, 43, 49, 55, 82),
    "DATE": (67, 68, 69, 70, 83),
    "PARTY": (89, 90, 91, 92, 84),
}.items():
    for _prefix, _number, _test in zip(("LEQ", "LESS", "GEQ", "GREATER", "EQUAL"), _numbers,
                                       (_LEQ, _LESS, _GEQ, _GREATER, _EQUAL), strict=True):
        _TABLE[_number] = (f"{_prefix}_{_suffix}", 2, _typed_cmp(_test))
for _prefix, _number, _test in zip(("LEQ", "LESS", "GEQ", "GREATER", "EQUAL"),
                                   (112, 113, 114, 115, 120),
                                   (_LEQ, _LESS, _GEQ, _GREATER, _EQUAL), strict=True):
    _TABLE[_number] = (f"{_prefix}_NUMERIC", 3, _numeric_cmp(_test))
_TABLE[85] = ("EQUAL_BOOL", 2, _typed_cmp(_EQUAL))
_TABLE[86] = ("EQUAL_CONTRACT_ID", 2, _typed_cmp(_EQUAL))

# LF 1.6 Decimal builtins: wire number -> (Numeric builtin, number of scale-10 nat arguments).
DECIMAL_REWRITES: dict[int, tuple[int, int]] = {
    0: (107, 1), 1: (108, 1), 2: (109, 3), 3: (110, 3), 6: (111, 1),
    34: (112, 1), 40: (113, 1), 46: (114, 1), 52: (115, 1), 80: (120, 1),
    58: (116, 1), 104: (117, 1), 76: (118, 1), 77: (119, 1),
}

_BUILTINS: dict[int, Builtin] = {
    number: Builtin(name, arity, impl) for number, (name, arity, impl) in _TABLE.items()
}
BUILTINS_BY_NAME: dict[str, Builtin] = {b.name: b for b in _BUILTINS.values()}


def builtin_for_wire(number: int) -> Builtin:
    """The builtin for a wire enum number (KeyError if unsupported)."""
    return _BUILTINS[number]


__all__ = ["BUILTINS_BY_NAME", "DECIMAL_REWRITES", "builtin_for_wire"]
