"""Decode one DAML-LF 1.x package (protobuf `daml_lf_1.Package`) into the `ast` model.

Handles both string encodings: LF 1.6 packages spell names inline (`*_str`, `*_dname`),
LF 1.7+ packages intern strings and dotted names and LF 1.11+ also types. Top-level value
bodies are decoded lazily, on first use, which keeps DAR loading fast: a compiled DAR carries
thousands of standard-library values and a typical command touches a few hundred.
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Any

from cairn.ledger.lf import ast as A
from cairn.ledger.lf.builtins import DECIMAL_REWRITES, builtin_for_wire
from cairn.ledger.lf.value import UNIT
from cairn.ledger.lf.wire import Msg, WireError


class DecodeError(ValueError):
    """The package is not valid DAML-LF (or uses a construct this engine does not support)."""


_WIDE = Context(prec=200)
_NO_NATS: frozenset[str] = frozenset()


def _numeric_literal(text: str, scale: int | None) -> Decimal:
    """A Numeric literal; its scale is its number of fraction digits unless given (LF 1.6
    Decimal literals are always scale 10)."""
    try:
        value = Decimal(text)
        if not value.is_finite():
            raise DecodeError(f"invalid numeric literal {text!r}")
        if scale is not None:
            value = value.quantize(Decimal(1).scaleb(-scale), context=_WIDE)
    except ArithmeticError:
        raise DecodeError(f"invalid numeric literal {text!r}") from None
    return value


class PackageDecoder:
    """Decodes one package; holds the interning tables shared by all of its definitions."""

    def __init__(self, package_id: str, buf: bytes, minor: str) -> None:
        self.package_id = package_id
        self.minor = minor
        self.buf = buf
        self.root = Msg(buf)
        self.strings = self.root.strings(2)
        self.dotted: list[str] = []
        for dname in self.root.msgs(3):
            self.dotted.append(".".join(self._str(i) for i in dname.packed_ints(1)))
        self.type_windows = self.root.windows(5)
        self.type_cache: list[A.Type | None] = [None] * len(self.type_windows)

    # ------------------------------------------------------------------------- names
    def _str(self, index: int) -> str:
        try:
            return self.strings[index]
        except IndexError:
            raise DecodeError(f"interned string index {index} out of range") from None

    def _dotted(self, index: int) -> str:
        try:
            return self.dotted[index]
        except IndexError:
            raise DecodeError(f"interned dotted name index {index} out of range") from None

    def name(self, msg: Msg, str_field: int, interned_field: int) -> str:
        """An identifier given either inline or as an interned string."""
        if msg.has(str_field):
            return msg.string(str_field)
        return self._str(msg.uint(interned_field))

    def dname(self, msg: Msg, dname_field: int, interned_field: int) -> str:
        """A dotted name given either as a DottedName message or an interned dotted name."""
        if msg.has(dname_field):
            sub = msg.msg(dname_field)
            assert sub is not None
            return ".".join(sub.strings(1))
        return self._dotted(msg.uint(interned_field))

    def package_ref(self, msg: Msg | None) -> str:
        if msg is None or msg.has(1):
            return self.package_id
        if msg.has(2):
            return msg.string(2)
        return self._str(msg.uint(3))

    def module_ref(self, msg: Msg | None) -> tuple[str, str]:
        if msg is None:
            raise DecodeError("missing module reference")
        return self.package_ref(msg.msg(1)), self.dname(msg, 2, 3)

    def tycon(self, msg: Msg | None) -> A.Identifier:
        if msg is None:
            raise DecodeError("missing type constructor name")
        pkg, module = self.module_ref(msg.msg(1))
        return A.Identifier(pkg, module, self.dname(msg, 2, 3))

    def val_name(self, msg: Msg) -> A.Identifier:
        pkg, module = self.module_ref(msg.msg(1))
        name = ".".join(msg.strings(2)) if msg.has(2) else self._dotted(msg.uint(3))
        return A.Identifier(pkg, module, name)

    # ------------------------------------------------------------------------- kinds/types
    def kind(self, msg: Msg | None) -> A.Kind:
        if msg is None:
            raise DecodeError("missing kind")
        if msg.has(3):
            return A.Kind.NAT
        if msg.has(2):
            return A.Kind.ARROW
        return A.Kind.STAR

    def type_var_binder(self, msg: Msg) -> A.TypeVarBinder:
        return A.TypeVarBinder(self.name(msg, 1, 3), self.kind(msg.msg(2)))

    def type(self, msg: Msg | None) -> A.Type:
        if msg is None:
            raise DecodeError("missing type")
        which = msg.which((13, 3, 2, 1, 11, 5, 7, 12))
        if which == 13:
            return self.interned_type(msg.uint(13))
        if which == 3:
            prim_msg = msg.msg(3)
            assert prim_msg is not None
            code = prim_msg.uint(1)
            args = tuple(self.type(t) for t in prim_msg.msgs(2))
            try:
                prim = A.PrimType(code)
            except ValueError:
                raise DecodeError(f"unknown builtin type {code}") from None
            if prim is A.PrimType.DECIMAL:
                return A.TBuiltin(A.PrimType.NUMERIC, (A.TNat(10),))
            return A.TBuiltin(prim, args)
        if which == 2:
            con = msg.msg(2)
            assert con is not None
            return A.TCon(self.tycon(con.msg(1)), tuple(self.type(t) for t in con.msgs(2)))
        if which == 1:
            var = msg.msg(1)
            assert var is not None
            return A.TVar(self.name(var, 1, 3), tuple(self.type(t) for t in var.msgs(2)))
        if which == 11:
            return A.TNat(msg.sint64(11))
        if which == 5:
            forall = msg.msg(5)
            assert forall is not None
            params = tuple(self.type_var_binder(v) for v in forall.msgs(1))
            return A.TForall(params, self.type(forall.msg(2)))
        if which == 7:
            struct = msg.msg(7)
            assert struct is not None
            return A.TStruct(tuple(self.field_with_type(f) for f in struct.msgs(1)))
        if which == 12:
            syn = msg.msg(12)
            assert syn is not None
            return A.TSyn(self.tycon(syn.msg(1)), tuple(self.type(t) for t in syn.msgs(2)))
        raise DecodeError("unknown type form")

    def interned_type(self, index: int) -> A.Type:
        if not 0 <= index < len(self.type_windows):
            raise DecodeError(f"interned type index {index} out of range")
        cached = self.type_cache[index]
        if cached is None:
            start, end = self.type_windows[index]
            cached = self.type(Msg(self.buf, start, end))
            self.type_cache[index] = cached
        return cached

    def field_with_type(self, msg: Msg) -> tuple[str, A.Type]:
        return self.name(msg, 1, 3), self.type(msg.msg(2))

    def type_con_msg(self, msg: Msg | None) -> A.Identifier:
        """The tycon of a `Type.Con` message (record/variant expressions carry one)."""
        if msg is None:
            raise DecodeError("missing type constructor")
        return self.tycon(msg.msg(1))

    # ------------------------------------------------------------------------- expressions
    def expr(self, msg: Msg | None, nats: frozenset[str]) -> A.Expr:
        if msg is None:
            raise DecodeError("missing expression")
        fields = msg.fields
        N = A.Node
        if 29 in fields:
            return N(A.E_VAR, self._str(msg.uint(29)))
        if 1 in fields:
            return N(A.E_VAR, msg.string(1))
        if 11 in fields:
            app = msg.msg(11)
            assert app is not None
            args = [self.expr(a, nats) for a in app.msgs(2)]
            if not args:
                raise DecodeError("application without arguments")
            return N(A.E_APP, self.expr(app.msg(1), nats), tuple(args))
        if 2 in fields:
            val = msg.msg(2)
            assert val is not None
            return N(A.E_VAL, self.val_name(val))
        if 3 in fields:
            return self.builtin(msg.uint(3))
        if 12 in fields:
            tyapp = msg.msg(12)
            assert tyapp is not None
            inner = self.expr(tyapp.msg(1), nats)
            runtime_args: list[A.Expr] = []
            for tmsg in tyapp.msgs(2):
                type_arg = self.type(tmsg)
                if isinstance(type_arg, A.TNat):
                    runtime_args.append(N(A.E_CONST, type_arg.value))
                elif isinstance(type_arg, A.TVar) and type_arg.name in nats:
                    runtime_args.append(N(A.E_VAR, "@" + type_arg.name))
            if runtime_args:
                return N(A.E_APP, inner, tuple(runtime_args))
            return inner
        if 14 in fields:
            tyabs = msg.msg(14)
            assert tyabs is not None
            binders = [self.type_var_binder(b) for b in tyabs.msgs(1)]
            inner_nats = set(nats)
            nat_params = []
            for binder in binders:
                if binder.kind is A.Kind.NAT:
                    inner_nats.add(binder.name)
                    nat_params.append("@" + binder.name)
                else:
                    inner_nats.discard(binder.name)
            body = self.expr(tyabs.msg(2), frozenset(inner_nats))
            if nat_params:
                return N(A.E_ABS, tuple(nat_params), body)
            return body
        if 13 in fields:
            abs_msg = msg.msg(13)
            assert abs_msg is not None
            params = tuple(self.name(p, 1, 3) for p in abs_msg.msgs(1))
            if not params:
                raise DecodeError("abstraction without parameters")
            return N(A.E_ABS, params, self.expr(abs_msg.msg(2), nats))
        if 15 in fields:
            case = msg.msg(15)
            assert case is not None
            alts = tuple(self.case_alt(alt, nats) for alt in case.msgs(2))
            return N(A.E_CASE, self.expr(case.msg(1), nats), alts)
        if 16 in fields:
            block = msg.msg(16)
            assert block is not None
            bindings = self.bindings(block, nats)
            return N(A.E_LET, bindings, self.expr(block.msg(2), nats))
        if 4 in fields:
            con = msg.uint(4)
            return N(A.E_CONST, UNIT if con == 0 else con == 2)
        if 5 in fields:
            lit = msg.msg(5)
            assert lit is not None
            return N(A.E_CONST, self.literal(lit))
        if 6 in fields:
            rec = msg.msg(6)
            assert rec is not None
            names = []
            exprs = []
            for fmsg in rec.msgs(2):
                names.append(self.name(fmsg, 1, 3))
                exprs.append(self.expr(fmsg.msg(2), nats))
            return N(A.E_RECCON, self.type_con_msg(rec.msg(1)), tuple(names), tuple(exprs))
        if 7 in fields:
            proj = msg.msg(7)
            assert proj is not None
            return N(A.E_RECPROJ, self.type_con_msg(proj.msg(1)), self.name(proj, 2, 4),
                     self.expr(proj.msg(3), nats))
        if 22 in fields:
            upd = msg.msg(22)
            assert upd is not None
            return N(A.E_RECUPD, self.type_con_msg(upd.msg(1)), self.name(upd, 2, 5),
                     self.expr(upd.msg(3), nats), self.expr(upd.msg(4), nats))
        if 8 in fields:
            var = msg.msg(8)
            assert var is not None
            return N(A.E_VARCON, self.type_con_msg(var.msg(1)), self.name(var, 2, 4),
                     self.expr(var.msg(3), nats), None)
        if 28 in fields:
            enum = msg.msg(28)
            assert enum is not None
            return N(A.E_ENUMCON, self.tycon(enum.msg(1)), self.name(enum, 2, 3), None)
        if 9 in fields:
            struct = msg.msg(9)
            assert struct is not None
            pairs = sorted(
                ((self.name(f, 1, 3), self.expr(f.msg(2), nats)) for f in struct.msgs(1)),
                key=lambda pair: pair[0],
            )
            return N(A.E_STRUCTCON, None, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
        if 10 in fields:
            proj = msg.msg(10)
            assert proj is not None
            return N(A.E_STRUCTPROJ, None, self.name(proj, 1, 3), self.expr(proj.msg(2), nats))
        if 23 in fields:
            upd = msg.msg(23)
            assert upd is not None
            return N(A.E_STRUCTUPD, None, self.name(upd, 1, 4), self.expr(upd.msg(2), nats),
                     self.expr(upd.msg(3), nats))
        if 17 in fields:
            return N(A.E_CONST, ())
        if 18 in fields:
            cons = msg.msg(18)
            assert cons is not None
            heads = tuple(self.expr(h, nats) for h in cons.msgs(2))
            if not heads:
                raise DecodeError("cons without head elements")
            return N(A.E_CONS, heads, self.expr(cons.msg(3), nats))
        if 26 in fields:
            return N(A.E_CONST, None)
        if 27 in fields:
            some = msg.msg(27)
            assert some is not None
            return N(A.E_SOME, self.expr(some.msg(2), nats))
        if 20 in fields:
            return N(A.E_UPDATE, self.update(msg.msg(20), nats))
        if 30 in fields or 31 in fields or 33 in fields or 34 in fields:
            number = next(n for n in (30, 31, 33, 34) if n in fields)
            sub = msg.msg(number)
            assert sub is not None
            tag = {30: A.E_TO_ANY, 31: A.E_FROM_ANY, 33: A.E_TO_ANY_EXCEPTION,
                   34: A.E_FROM_ANY_EXCEPTION}[number]
            return N(tag, self.type(sub.msg(1)), self.expr(sub.msg(2), nats))
        if 32 in fields:
            return N(A.E_TYPE_REP, self.type(msg.msg(32)))
        if 35 in fields:
            throw = msg.msg(35)
            assert throw is not None
            return N(A.E_THROW, self.type(throw.msg(2)), self.expr(throw.msg(3), nats))
        return self.interface_expr(msg, nats)

    def interface_expr(self, msg: Msg, nats: frozenset[str]) -> A.Expr:
        fields = msg.fields
        N = A.Node
        if 36 in fields or 37 in fields:
            number = 36 if 36 in fields else 37
            sub = msg.msg(number)
            assert sub is not None
            tag = A.E_TO_INTERFACE if number == 36 else A.E_FROM_INTERFACE
            return N(tag, self.tycon(sub.msg(1)), self.tycon(sub.msg(2)),
                     self.expr(sub.msg(3), nats))
        if 42 in fields:
            sub = msg.msg(42)
            assert sub is not None
            return N(A.E_UNSAFE_FROM_INTERFACE, self.tycon(sub.msg(1)), self.tycon(sub.msg(2)),
                     self.expr(sub.msg(3), nats), self.expr(sub.msg(4), nats))
        if 38 in fields:
            sub = msg.msg(38)
            assert sub is not None
            return N(A.E_CALL_INTERFACE, self.tycon(sub.msg(1)), self._str(sub.uint(2)),
                     self.expr(sub.msg(3), nats))
        simple = {41: A.E_VIEW_INTERFACE, 39: A.E_SIGNATORY_INTERFACE,
                  40: A.E_OBSERVER_INTERFACE, 43: A.E_INTERFACE_TYPE_REP}
        for number, tag in simple.items():
            if number in fields:
                sub = msg.msg(number)
                assert sub is not None
                return N(tag, self.tycon(sub.msg(1)), None, self.expr(sub.msg(2), nats))
        if 44 in fields:
            sub = msg.msg(44)
            assert sub is not None
            return N(A.E_TO_REQUIRED_INTERFACE, None, None, self.expr(sub.msg(3), nats))
        if 45 in fields:
            sub = msg.msg(45)
            assert sub is not None
            return N(A.E_FROM_REQUIRED_INTERFACE, self.tycon(sub.msg(1)),
                     self.tycon(sub.msg(2)), self.expr(sub.msg(3), nats))
        if 46 in fields:
            sub = msg.msg(46)
            assert sub is not None
            return N(A.E_UNSAFE_FROM_REQUIRED_INTERFACE, self.tycon(sub.msg(1)),
                     self.tycon(sub.msg(2)), self.expr(sub.msg(3), nats),
                     self.expr(sub.msg(4), nats))
        if 21 in fields:
            return N(A.E_SCENARIO)
        if 9999 in fields:
            sub = msg.msg(9999)
            assert sub is not None
            return N(A.E_EXPERIMENTAL, sub.string(1))
        raise DecodeError(f"unsupported expression form (fields {sorted(fields)})")

    def builtin(self, number: int) -> A.Expr:
        rewrite = DECIMAL_REWRITES.get(number)
        if rewrite is not None:
            numeric_number, nat_count = rewrite
            tens = tuple(A.Node(A.E_CONST, 10) for _ in range(nat_count))
            return A.Node(A.E_APP, A.Node(A.E_BUILTIN, builtin_for_wire(numeric_number)), tens)
        try:
            return A.Node(A.E_BUILTIN, builtin_for_wire(number))
        except KeyError:
            raise DecodeError(f"unsupported builtin function {number}") from None

    def literal(self, msg: Msg) -> Any:
        which = msg.which((1, 10, 11, 12, 5, 8, 2, 4, 7, 13))
        if which == 1:
            return msg.sint64(1)
        if which == 10:
            return _numeric_literal(self._str(msg.uint(10)), None)
        if which == 2:
            return _numeric_literal(msg.string(2), 10)
        if which == 11:
            return self._str(msg.uint(11))
        if which == 4:
            return msg.string(4)
        if which == 12:
            return self._str(msg.uint(12))
        if which == 7:
            return msg.string(7)
        if which == 5:
            return msg.sfixed64(5)
        if which == 8:
            return msg.int32(8)
        if which == 13:
            return msg.uint(13)
        raise DecodeError("unknown literal form")

    def case_alt(self, msg: Msg, nats: frozenset[str]) -> A.CaseAlt:
        body = self.expr(msg.msg(6), nats)
        fields = msg.fields
        if 2 in fields:
            var = msg.msg(2)
            assert var is not None
            return A.CaseAlt(A.P_VARIANT, body, self.name(var, 2, 4), self.name(var, 3, 5))
        if 9 in fields:
            enum = msg.msg(9)
            assert enum is not None
            return A.CaseAlt(A.P_ENUM, body, self.name(enum, 2, 3))
        if 3 in fields:
            con = msg.uint(3)
            return A.CaseAlt(A.P_PRIM_CON, body, UNIT if con == 0 else con == 2)
        if 4 in fields:
            return A.CaseAlt(A.P_NIL, body)
        if 5 in fields:
            cons = msg.msg(5)
            assert cons is not None
            return A.CaseAlt(A.P_CONS, body, None, self.name(cons, 1, 3), self.name(cons, 2, 4))
        if 7 in fields:
            return A.CaseAlt(A.P_NONE, body)
        if 8 in fields:
            some = msg.msg(8)
            assert some is not None
            return A.CaseAlt(A.P_SOME, body, None, self.name(some, 1, 2))
        if 1 in fields:
            return A.CaseAlt(A.P_DEFAULT, body)
        raise DecodeError("unknown case pattern")

    def bindings(self, block: Msg, nats: frozenset[str]) -> tuple[tuple[str, A.Expr], ...]:
        out = []
        for binding in block.msgs(1):
            binder = binding.msg(1)
            if binder is None:
                raise DecodeError("binding without binder")
            out.append((self.name(binder, 1, 3), self.expr(binding.msg(2), nats)))
        if not out:
            raise DecodeError("block without bindings")
        return tuple(out)

    def update(self, msg: Msg | None, nats: frozenset[str]) -> A.Node:
        if msg is None:
            raise DecodeError("missing update")
        fields = msg.fields
        N = A.Node
        if 1 in fields:
            pure = msg.msg(1)
            assert pure is not None
            return N(A.U_PURE, self.expr(pure.msg(2), nats))
        if 2 in fields:
            block = msg.msg(2)
            assert block is not None
            return N(A.U_BLOCK, self.bindings(block, nats), self.expr(block.msg(2), nats))
        if 3 in fields:
            sub = msg.msg(3)
            assert sub is not None
            return N(A.U_CREATE, self.tycon(sub.msg(1)), self.expr(sub.msg(2), nats))
        if 4 in fields:
            sub = msg.msg(4)
            assert sub is not None
            return N(A.U_EXERCISE, self.tycon(sub.msg(1)), self.name(sub, 2, 6),
                     self.expr(sub.msg(3), nats), self.expr(sub.msg(5), nats))
        if 10 in fields:
            sub = msg.msg(10)
            assert sub is not None
            return N(A.U_EXERCISE_BY_KEY, self.tycon(sub.msg(1)), self._str(sub.uint(2)),
                     self.expr(sub.msg(3), nats), self.expr(sub.msg(4), nats))
        if 5 in fields:
            sub = msg.msg(5)
            assert sub is not None
            return N(A.U_FETCH, self.tycon(sub.msg(1)), None, self.expr(sub.msg(2), nats))
        if 6 in fields:
            return N(A.U_GET_TIME)
        if 8 in fields or 9 in fields:
            number = 8 if 8 in fields else 9
            sub = msg.msg(number)
            assert sub is not None
            tag = A.U_LOOKUP_BY_KEY if number == 8 else A.U_FETCH_BY_KEY
            return N(tag, self.tycon(sub.msg(1)), None, self.expr(sub.msg(2), nats))
        if 7 in fields:
            sub = msg.msg(7)
            assert sub is not None
            return N(A.U_EMBED, self.expr(sub.msg(2), nats))
        if 11 in fields:
            sub = msg.msg(11)
            assert sub is not None
            return N(A.U_TRY, self.expr(sub.msg(2), nats), self._str(sub.uint(3)),
                     self.expr(sub.msg(4), nats))
        if 12 in fields:
            sub = msg.msg(12)
            assert sub is not None
            return N(A.U_CREATE_INTERFACE, self.tycon(sub.msg(1)), self.expr(sub.msg(2), nats))
        if 13 in fields:
            sub = msg.msg(13)
            assert sub is not None
            guard = self.expr(sub.msg(5), nats) if sub.has(5) else None
            return N(A.U_EXERCISE_INTERFACE, self.tycon(sub.msg(1)), self._str(sub.uint(2)),
                     self.expr(sub.msg(3), nats), (self.expr(sub.msg(4), nats), guard))
        if 14 in fields:
            sub = msg.msg(14)
            assert sub is not None
            return N(A.U_FETCH_INTERFACE, self.tycon(sub.msg(1)), None,
                     self.expr(sub.msg(2), nats))
        raise DecodeError(f"unsupported update form (fields {sorted(fields)})")

    # ------------------------------------------------------------------------- definitions
    def choice(self, msg: Msg) -> A.Choice:
        arg_binder = msg.msg(4)
        if arg_binder is None:
            raise DecodeError("choice without argument binder")
        return A.Choice(
            name=self.name(msg, 1, 9),
            consuming=msg.boolean(2),
            controllers=self.expr(msg.msg(3), _NO_NATS),
            observers=self.expr(msg.msg(11), _NO_NATS) if msg.has(11) else None,
            self_binder=self.name(msg, 7, 10),
            arg_binder=self.name(arg_binder, 1, 3),
            arg_type=self.type(arg_binder.msg(2)),
            return_type=self.type(msg.msg(5)),
            update=self.expr(msg.msg(6), _NO_NATS),
        )

    def key_expr(self, msg: Msg, param: str) -> A.Expr:
        """Legacy LF 1.3 key syntax (record of projections) as an ordinary expression."""
        if msg.has(1):
            projections = msg.msg(1)
            assert projections is not None
            expr: A.Expr = A.Node(A.E_VAR, param)
            for proj in projections.msgs(2):
                expr = A.Node(A.E_RECPROJ, self.type_con_msg(proj.msg(1)),
                              self.name(proj, 2, 3), expr)
            return expr
        record = msg.msg(2)
        if record is None:
            raise DecodeError("unknown key expression form")
        names = []
        exprs = []
        for fmsg in record.msgs(2):
            names.append(self.name(fmsg, 1, 3))
            sub = fmsg.msg(2)
            if sub is None:
                raise DecodeError("key record field without expression")
            exprs.append(self.key_expr(sub, param))
        return A.Node(A.E_RECCON, self.type_con_msg(record.msg(1)), tuple(names), tuple(exprs))

    def instance_body(self, msg: Msg | None, interface: A.Identifier,
                      template: A.Identifier) -> A.InterfaceInstance:
        if msg is None:
            return A.InterfaceInstance(interface, template, {}, None)
        methods = {self._str(m.uint(1)): self.expr(m.msg(2), _NO_NATS) for m in msg.msgs(1)}
        view = self.expr(msg.msg(2), _NO_NATS) if msg.has(2) else None
        return A.InterfaceInstance(interface, template, methods, view)

    def template(self, msg: Msg, module: str) -> A.Template:
        name = A.Identifier(self.package_id, module, self.dname(msg, 1, 12))
        param = self.name(msg, 2, 11)
        key = None
        key_msg = msg.msg(10)
        if key_msg is not None:
            if key_msg.has(4):
                body = self.expr(key_msg.msg(4), _NO_NATS)
            else:
                legacy = key_msg.msg(2)
                if legacy is None:
                    raise DecodeError(f"template {name} has a key without expression")
                body = self.key_expr(legacy, param)
            key = A.TemplateKey(self.type(key_msg.msg(1)), body,
                                self.expr(key_msg.msg(3), _NO_NATS))
        implements = {}
        for impl in msg.msgs(13):
            iface = self.tycon(impl.msg(1))
            implements[iface] = self.instance_body(impl.msg(2), iface, name)
        return A.Template(
            name=name,
            param=param,
            precondition=self.expr(msg.msg(4), _NO_NATS) if msg.has(4) else None,
            signatories=self.expr(msg.msg(5), _NO_NATS),
            observers=self.expr(msg.msg(8), _NO_NATS) if msg.has(8) else A.Node(A.E_CONST, ()),
            agreement=self.expr(msg.msg(6), _NO_NATS) if msg.has(6) else None,
            choices={c.name: c for c in (self.choice(m) for m in msg.msgs(7))},
            key=key,
            implements=implements,
        )

    def interface(self, msg: Msg, module: str) -> A.Interface:
        name = A.Identifier(self.package_id, module, self._dotted(msg.uint(2)))
        co_implements = {}
        for co in msg.msgs(6):
            tpl = self.tycon(co.msg(1))
            co_implements[tpl] = self.instance_body(co.msg(2), name, tpl)
        return A.Interface(
            name=name,
            param=self._str(msg.uint(4)),
            methods={self._str(m.uint(2)): self.type(m.msg(3)) for m in msg.msgs(3)},
            choices={c.name: c for c in (self.choice(m) for m in msg.msgs(5))},
            view=self.type(msg.msg(8)) if msg.has(8) else None,
            requires=tuple(self.tycon(r) for r in msg.msgs(9)),
            co_implements=co_implements,
        )

    def data_type(self, msg: Msg, module: str) -> A.DataType:
        name = A.Identifier(self.package_id, module, self.dname(msg, 1, 8))
        params = tuple(self.type_var_binder(p) for p in msg.msgs(2))
        serializable = msg.boolean(5)
        if msg.has(3) or msg.has(4):
            kind = "record" if msg.has(3) else "variant"
            sub = msg.msg(3 if kind == "record" else 4)
            assert sub is not None
            fields = tuple(self.field_with_type(f) for f in sub.msgs(1))
            return A.DataType(name, params, serializable, kind, fields,
                              tuple(f[0] for f in fields))
        if msg.has(7):
            enum = msg.msg(7)
            assert enum is not None
            if enum.has(1):
                cons = tuple(enum.strings(1))
            else:
                cons = tuple(self._str(i) for i in enum.packed_ints(2))
            return A.DataType(name, params, serializable, "enum", (), cons)
        if msg.has(9):
            return A.DataType(name, params, False, "interface")
        # Proto3 omits an empty record's `Fields` message only when unset; treat as empty record.
        return A.DataType(name, params, serializable, "record")

    def value_def(self, msg: Msg, module: str) -> A.ValueDef:
        nwt = msg.msg(1)
        if nwt is None:
            raise DecodeError("value definition without name")
        name = ".".join(nwt.strings(1)) if nwt.has(1) else self._dotted(nwt.uint(3))
        ident = A.Identifier(self.package_id, module, name)
        window = msg.window(2)

        def decode_body() -> A.Expr:
            if window is None:
                raise DecodeError(f"value {ident} has no body")
            try:
                return self.expr(Msg(self.buf, window[0], window[1]), _NO_NATS)
            except DecodeError:
                raise
            except (ValueError, ArithmeticError, IndexError, KeyError, TypeError,
                    RecursionError) as exc:
                raise DecodeError(f"malformed body of {ident}: {exc}") from exc

        return A.ValueDef(ident, decode_body)

    def module(self, msg: Msg) -> A.Module:
        name = self.dname(msg, 1, 8)
        data_types = {}
        for dmsg in msg.msgs(5):
            dt = self.data_type(dmsg, name)
            data_types[dt.name.name] = dt
        synonyms = {}
        for smsg in msg.msgs(9):
            syn_name = A.Identifier(self.package_id, name, self.dname(smsg, 1, 8))
            synonyms[syn_name.name] = A.TypeSynonym(
                syn_name, tuple(self.type_var_binder(p) for p in smsg.msgs(2)),
                self.type(smsg.msg(3)))
        templates = {}
        for tmsg in msg.msgs(7):
            tpl = self.template(tmsg, name)
            templates[tpl.name.name] = tpl
        interfaces = {}
        for imsg in msg.msgs(11):
            iface = self.interface(imsg, name)
            interfaces[iface.name.name] = iface
        exceptions = {}
        for emsg in msg.msgs(10):
            exc_name = A.Identifier(self.package_id, name, self._dotted(emsg.uint(1)))
            exceptions[exc_name.name] = A.ExceptionDef(exc_name,
                                                       self.expr(emsg.msg(3), _NO_NATS))
        values = {}
        for vmsg in msg.msgs(6):
            value = self.value_def(vmsg, name)
            values[value.name.name] = value
        return A.Module(name, data_types, synonyms, templates, interfaces, exceptions, values)

    def package(self, payload: bytes) -> A.Package:
        modules = {}
        for mmsg in self.root.msgs(1):
            module = self.module(mmsg)
            modules[module.name] = module
        meta = self.root.msg(4)
        name = version = None
        if meta is not None:
            name = self._str(meta.uint(1))
            version = self._str(meta.uint(2))
        return A.Package(self.package_id, f"1.{self.minor}", name, version, modules, payload)


def decode_package(package_id: str, payload: bytes, package_bytes: bytes, minor: str
                   ) -> A.Package:
    """Decode a `daml_lf_1.Package` message (templates and types eagerly, values lazily)."""
    try:
        return PackageDecoder(package_id, package_bytes, minor).package(payload)
    except WireError as exc:
        raise DecodeError(f"malformed package {package_id}: {exc}") from exc
    except RecursionError as exc:
        raise DecodeError(f"package {package_id} is nested too deeply") from exc
