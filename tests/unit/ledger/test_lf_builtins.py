"""Builtin functions (Numeric scale semantics, Int64 overflow, text formatting, maps) and the
interpreter machinery on hand-built expressions (deep recursion, folds, ArithmeticError)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cairn.ledger.lf import ast as A
from cairn.ledger.lf import builtins as B
from cairn.ledger.lf.errors import ArithmeticFailure, EngineError, UserError
from cairn.ledger.lf.interp import ARITHMETIC_ERROR, DamlThrow, EmptyLedger, Machine
from cairn.ledger.lf.packages import PackageSet
from cairn.ledger.lf.value import UNIT, GenMap, Record, Some, Struct, compare


def d(text: str) -> Decimal:
    return Decimal(text)


# ------------------------------------------------------------------------------ Int64
def test_int64_arithmetic_and_overflow() -> None:
    assert B.add_int64(2, 3) == 5
    assert B.div_int64(-7, 2) == -3  # truncates toward zero
    assert B.mod_int64(-7, 2) == -1  # sign of the dividend
    assert B.exp_int64(2, 62) == 2**62
    for fn, args in [(B.add_int64, (B.INT64_MAX, 1)), (B.sub_int64, (B.INT64_MIN, 1)),
                     (B.mul_int64, (2**62, 2)), (B.div_int64, (1, 0)),
                     (B.div_int64, (B.INT64_MIN, -1)), (B.mod_int64, (1, 0)),
                     (B.exp_int64, (2, 63)), (B.exp_int64, (2, -1))]:
        with pytest.raises(ArithmeticFailure, match="ArithmeticError while evaluating"):
            fn(*args)


def test_text_to_int64() -> None:
    assert B.text_to_int64("-42") == Some(-42)
    assert B.text_to_int64("+42") == Some(42)
    assert B.text_to_int64("4.2") is None
    assert B.text_to_int64("9223372036854775808") is None


# ------------------------------------------------------------------------------ Numeric
def test_numeric_add_keeps_scale_and_checks_bounds() -> None:
    assert B.add_numeric(10, d("1.0000000000"), d("2.5000000000")) == d("3.5")
    assert str(B.add_numeric(2, d("1.25"), d("1.25"))) == "2.50"
    big = d("9" * 28 + "." + "9" * 10)
    with pytest.raises(ArithmeticFailure):
        B.add_numeric(10, big, d("0.0000000001"))


def test_numeric_mul_div_round_half_even_to_output_scale() -> None:
    assert str(B.mul_numeric(2, 2, 2, d("0.25"), d("0.50"))) == "0.12"  # 0.125 -> 0.12
    assert str(B.mul_numeric(2, 2, 2, d("0.35"), d("0.50"))) == "0.18"  # 0.175 -> 0.18
    assert str(B.div_numeric(10, 10, 10, d("1.0000000000"), d("3.0000000000"))) == \
        "0.3333333333"
    assert str(B.div_numeric(0, 0, 0, d("5"), d("2"))) == "2"  # 2.5 -> 2
    assert str(B.div_numeric(0, 0, 0, d("7"), d("2"))) == "4"  # 3.5 -> 4
    assert str(B.div_numeric(0, 0, 2, d("1"), d("8"))) == "0.12"
    with pytest.raises(ArithmeticFailure):
        B.div_numeric(10, 10, 10, d("1.0000000000"), d("0E-10"))


def test_numeric_round_cast_shift() -> None:
    assert str(B.round_numeric(10, 2, d("1.2350000000"))) == "1.2400000000"
    assert str(B.round_numeric(10, 2, d("1.2250000000"))) == "1.2200000000"
    assert str(B.round_numeric(2, -1, d("15.00"))) == "20.00"
    assert str(B.cast_numeric(10, 2, d("1.2500000000"))) == "1.25"
    with pytest.raises(ArithmeticFailure):
        B.cast_numeric(10, 2, d("1.2510000000"))
    assert str(B.shift_numeric(2, 4, d("123.45"))) == "1.2345"


def test_numeric_text_conversions() -> None:
    assert B.numeric_to_text(10, d("1.5000000000")) == "1.5000000000"
    assert B.numeric_to_text(0, d("7")) == "7."
    assert B.text_to_numeric(10, "1.25") == Some(d("1.2500000000"))
    assert B.text_to_numeric(2, "1.255") is None  # would lose precision
    assert B.text_to_numeric(2, "abc") is None
    assert B.int64_to_numeric(3, 5) == d("5.000")
    assert B.numeric_to_int64(10, d("-2.7000000000")) == -2


def test_bignumeric() -> None:
    assert B.scale_bignumeric(d("1.10")) == 1
    assert B.precision_bignumeric(d("1.10")) == 2
    assert B.div_bignumeric(3, 6, d("1"), d("3")) == d("0.333")
    with pytest.raises(ArithmeticFailure):
        B.div_bignumeric(3, 7, d("1"), d("3"))  # UNNECESSARY but inexact
    assert B.bignumeric_to_text(d("12")) == "12.0"


# ------------------------------------------------------------------------------ text & time
def test_text_builtins() -> None:
    assert B.sha256_text("") == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852"
                                 "b855")
    assert B.text_to_party("Alice::1220") == Some("Alice::1220")
    assert B.text_to_party("bad!") is None
    assert B.builtin_for_wire(106).impl("a\U0001f600") == (97, 0x1F600)
    with pytest.raises(UserError):
        B.builtin_for_wire(105).impl((0xD800,))


@pytest.mark.parametrize(("micros", "text"), [
    (0, "1970-01-01T00:00:00Z"),
    (1_500_000, "1970-01-01T00:00:01.500Z"),
    (1_000_001, "1970-01-01T00:00:01.000001Z"),
    (-62135596800000000, "0001-01-01T00:00:00Z"),
])
def test_timestamp_to_text(micros: int, text: str) -> None:
    assert B.timestamp_to_text(micros) == text


def test_dates() -> None:
    assert B.date_to_text(18321) == "2020-02-29"
    with pytest.raises(ArithmeticFailure):
        B.unix_days_to_date(B.DATE_MAX + 1)


# ------------------------------------------------------------------------------ maps & compare
def test_text_map_builtins_are_persistent() -> None:
    empty: dict[str, int] = {}
    one = B.textmap_insert("b", 2, empty)
    two = B.textmap_insert("a", 1, one)
    assert empty == {} and one == {"b": 2}
    to_list = B.textmap_to_list(two)
    assert [entry.get("key") for entry in to_list] == ["a", "b"]
    assert B.textmap_delete("a", two) == {"b": 2}


def test_gen_map_builtins_order_keys_generically() -> None:
    m = GenMap(())
    for key in [(3,), (1, 2), (1,), ()]:
        m = B.genmap_insert(key, str(key), m)
    assert [k for k, _ in m.entries] == [(), (1,), (1, 2), (3,)]
    assert B.genmap_lookup((1, 2), m) == Some("(1, 2)")
    assert B.genmap_lookup((9,), m) is None
    assert len(B.genmap_delete((1,), m).entries) == 3


def test_generic_comparison() -> None:
    tycon = A.Identifier("p", "M", "R")
    assert compare(None, Some(0)) < 0
    assert compare(Record(tycon, ("a", "b"), (1, "x")), Record(tycon, ("a", "b"), (1, "y"))) < 0
    assert compare((1, 2), (1, 2, 0)) < 0
    assert compare(UNIT, UNIT) == 0
    assert compare(d("1.50"), d("1.5")) == 0


# ------------------------------------------------------------------------------ interpreter
N = A.Node


def const(value: object) -> A.Node:
    return N(A.E_CONST, value)


def var(name: str) -> A.Node:
    return N(A.E_VAR, name)


def builtin(name: str) -> A.Node:
    return N(A.E_BUILTIN, B.BUILTINS_BY_NAME[name])


def app(fn: A.Expr, *args: A.Expr) -> A.Node:
    return N(A.E_APP, fn, args)


def machine(values: dict[str, A.Expr] | None = None) -> Machine:
    module = A.Module("M", {}, {}, {}, {}, {}, {
        name: A.ValueDef(A.Identifier("pkg", "M", name), None, body)
        for name, body in (values or {}).items()
    })
    package = A.Package("pkg", "1.15", None, None, {"M": module}, b"")
    return Machine(PackageSet([package]), {}, EmptyLedger(), frozenset({"Alice"}), 0)


def test_foldl_over_a_long_list() -> None:
    items = tuple(range(100_000))
    expr = app(builtin("FOLDL"), builtin("ADD_INT64"), const(0), const(items))
    assert machine().eval(expr) == sum(items)


def test_deep_non_tail_recursion() -> None:
    # sumTo n = if n == 0 then 0 else n + sumTo (n - 1), evaluated 50,000 levels deep.
    sum_to = A.Identifier("pkg", "M", "sumTo")
    body = N(A.E_ABS, ("n",), N(A.E_CASE, app(builtin("EQUAL"), var("n"), const(0)), (
        A.CaseAlt(A.P_PRIM_CON, const(0), True),
        A.CaseAlt(A.P_DEFAULT, app(builtin("ADD_INT64"), var("n"), app(
            N(A.E_VAL, sum_to), app(builtin("SUB_INT64"), var("n"), const(1))))),
    )))
    m = machine({"sumTo": body})
    assert m.eval(app(N(A.E_VAL, sum_to), const(50_000))) == 50_000 * 50_001 // 2


def test_cons_patterns_and_let() -> None:
    # let xs = 1 :: 2 :: [] in case xs of h :: t -> (h, t)
    expr = N(A.E_LET, (("xs", N(A.E_CONS, (const(1), const(2)), const(()))),),
             N(A.E_CASE, var("xs"), (
                 A.CaseAlt(A.P_NIL, const(None)),
                 A.CaseAlt(A.P_CONS, N(A.E_STRUCTCON, None, ("h", "t"), (var("h"), var("t"))),
                           None, "h", "t"),
             )))
    assert machine().eval(expr) == Struct(("h", "t"), (1, (2,)))


def test_partial_application_of_builtins() -> None:
    add_one = app(builtin("ADD_INT64"), const(1))
    assert machine().eval(app(add_one, const(41))) == 42


def test_arithmetic_error_is_a_catchable_daml_exception() -> None:
    expr = app(builtin("ADD_INT64"), const(B.INT64_MAX), const(1))
    with pytest.raises(DamlThrow) as raised:
        machine().eval(expr)
    payload = raised.value.payload
    assert payload.value.tycon == ARITHMETIC_ERROR
    assert payload.value.get("message") == (
        "ArithmeticError while evaluating (ADD_INT64 9223372036854775807 1).")


def test_try_catch_of_arithmetic_error_in_an_update() -> None:
    # try (pure (1 / 0)) catch e -> Some (pure 7)
    failing = N(A.U_PURE, app(builtin("DIV_INT64"), const(1), const(0)))
    handler = N(A.E_SOME, N(A.E_UPDATE, N(A.U_PURE, const(7))))
    update = N(A.E_UPDATE, N(A.U_TRY, N(A.E_UPDATE, failing), "e", handler))
    m = machine()
    assert m.execute(m.eval(update)) == 7


def test_error_builtin_is_fatal() -> None:
    with pytest.raises(UserError, match="boom"):
        machine().eval(app(builtin("ERROR"), const("boom")))


def test_self_referential_value_is_an_error_not_a_hang() -> None:
    loop = A.Identifier("pkg", "M", "loop")
    m = machine({"loop": N(A.E_VAL, loop)})
    with pytest.raises(EngineError, match="depends on itself"):
        m.eval(N(A.E_VAL, loop))
