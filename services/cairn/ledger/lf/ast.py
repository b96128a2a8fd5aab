"""The in-memory DAML-LF package model: identifiers, types, definitions and expression nodes.

Definitions and types are immutable dataclasses. Expression and update nodes are small slotted
classes with an integer `tag` so the interpreter can dispatch on one attribute. Type
abstractions over `*`-kinded variables are erased by the decoder (as the reference engine
does); abstractions over `nat` variables become ordinary lambdas whose parameters are named
`@<var>`, because Numeric builtins need the scale at run time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Identifier:
    """A fully qualified reference `package_id:Module.Name:Entity.Name`."""

    package_id: str
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.package_id}:{self.module}:{self.name}"

    @property
    def qualified_name(self) -> str:
        return f"{self.module}:{self.name}"


class PrimType(enum.IntEnum):
    """Builtin types, numbered as on the wire (DECIMAL is rewritten to NUMERIC 10)."""

    UNIT = 0
    BOOL = 1
    INT64 = 2
    DECIMAL = 3
    TEXT = 5
    TIMESTAMP = 6
    PARTY = 8
    LIST = 9
    UPDATE = 10
    SCENARIO = 11
    DATE = 12
    CONTRACT_ID = 13
    OPTIONAL = 14
    ARROW = 15
    TEXTMAP = 16
    NUMERIC = 17
    ANY = 18
    TYPE_REP = 19
    GENMAP = 20
    BIGNUMERIC = 21
    ROUNDING_MODE = 22
    ANY_EXCEPTION = 23


# ---------------------------------------------------------------------------------------- types


class Type:
    """Base of all LF types."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class TVar(Type):
    name: str
    args: tuple[Type, ...] = ()


@dataclass(frozen=True, slots=True)
class TNat(Type):
    value: int


@dataclass(frozen=True, slots=True)
class TCon(Type):
    tycon: Identifier
    args: tuple[Type, ...] = ()


@dataclass(frozen=True, slots=True)
class TSyn(Type):
    name: Identifier
    args: tuple[Type, ...] = ()


@dataclass(frozen=True, slots=True)
class TBuiltin(Type):
    prim: PrimType
    args: tuple[Type, ...] = ()


@dataclass(frozen=True, slots=True)
class TForall(Type):
    params: tuple[TypeVarBinder, ...]
    body: Type


@dataclass(frozen=True, slots=True)
class TStruct(Type):
    fields: tuple[tuple[str, Type], ...]


class Kind(enum.Enum):
    """Kinds, reduced to what the engine needs: only `nat` variables matter at run time."""

    STAR = "*"
    NAT = "nat"
    ARROW = "arrow"


@dataclass(frozen=True, slots=True)
class TypeVarBinder:
    name: str
    kind: Kind


# ---------------------------------------------------------------------------------- expressions


class Expr:
    """Base of expression nodes; `tag` selects the interpreter case."""

    __slots__ = ()
    tag: int = -1


class Node(Expr):
    """A generic expression node: a tag plus positional operands in `a`, `b`, `c`, `d`."""

    __slots__ = ("a", "b", "c", "d", "subs", "tag")

    def __init__(self, tag: int, a: Any = None, b: Any = None, c: Any = None, d: Any = None):
        self.tag = tag
        self.a = a
        self.b = b
        self.c = c
        self.d = d
        # Sub-expressions evaluated in order before the node completes (filled by the
        # interpreter on first visit).
        self.subs: tuple[Expr, ...] | None = None

    def __repr__(self) -> str:
        return f"Node({EXPR_TAG_NAMES.get(self.tag, self.tag)}, {self.a!r}, {self.b!r})"


# Expression tags. Operand layout per tag is documented next to each constant.
E_VAR = 0  # a: name
E_VAL = 1  # a: Identifier
E_BUILTIN = 2  # a: Builtin
E_CONST = 3  # a: literal value (prim cons, literals, Nil, None, enum constructors)
E_RECCON = 4  # a: tycon, b: field names, c: field exprs
E_RECPROJ = 5  # a: tycon, b: field name, c: record expr
E_RECUPD = 6  # a: tycon, b: field name, c: record expr, d: new value expr
E_VARCON = 7  # a: tycon, b: constructor, c: argument expr, d: constructor rank
E_STRUCTCON = 8  # b: field names, c: field exprs
E_STRUCTPROJ = 9  # b: field name, c: struct expr
E_STRUCTUPD = 10  # b: field name, c: struct expr, d: new value expr
E_APP = 11  # a: function expr, b: argument exprs
E_ABS = 12  # a: parameter names, b: body
E_CASE = 13  # a: scrutinee, b: alternatives (CaseAlt)
E_LET = 14  # a: (name, expr) bindings, b: body
E_CONS = 15  # a: head exprs, b: tail expr
E_SOME = 16  # a: body
E_TO_ANY = 17  # a: type, b: expr
E_FROM_ANY = 18  # a: type, b: expr
E_TYPE_REP = 19  # a: type
E_UPDATE = 20  # a: update node
E_TO_ANY_EXCEPTION = 21  # a: type, b: expr
E_FROM_ANY_EXCEPTION = 22  # a: type, b: expr
E_THROW = 23  # a: exception type, b: expr
E_TO_INTERFACE = 24  # a: interface, b: template, c: expr
E_FROM_INTERFACE = 25  # a: interface, b: template, c: expr
E_UNSAFE_FROM_INTERFACE = 26  # a: interface, b: template, c: cid expr, d: interface expr
E_CALL_INTERFACE = 27  # a: interface, b: method name, c: expr
E_VIEW_INTERFACE = 28  # a: interface, c: expr
E_SIGNATORY_INTERFACE = 29  # a: interface, c: expr
E_OBSERVER_INTERFACE = 30  # a: interface, c: expr
E_INTERFACE_TYPE_REP = 31  # a: interface, c: expr
E_TO_REQUIRED_INTERFACE = 32  # c: expr (identity at run time)
E_FROM_REQUIRED_INTERFACE = 33  # a: required, b: requiring, c: expr
E_UNSAFE_FROM_REQUIRED_INTERFACE = 34  # a: required, b: requiring, c: cid expr, d: expr
E_SCENARIO = 35  # not supported on a ledger: evaluating it is an error
E_EXPERIMENTAL = 36  # a: name
E_ENUMCON = 37  # a: tycon, b: constructor, c: cached Enum value (rank resolved on first use)

# Update tags (operands in the same Node class).
U_PURE = 100  # a: expr
U_BLOCK = 101  # a: (name, expr) bindings, b: body expr
U_CREATE = 102  # a: template, b: arg expr
U_EXERCISE = 103  # a: template, b: choice, c: cid expr, d: arg expr
U_EXERCISE_BY_KEY = 104  # a: template, b: choice, c: key expr, d: arg expr
U_FETCH = 105  # a: template, c: cid expr
U_GET_TIME = 106
U_LOOKUP_BY_KEY = 107  # a: template, c: key expr
U_FETCH_BY_KEY = 108  # a: template, c: key expr
U_EMBED = 109  # a: expr
U_TRY = 110  # a: body expr, b: binder name, c: handler expr
U_CREATE_INTERFACE = 111  # a: interface, b: arg expr
U_EXERCISE_INTERFACE = 112  # a: interface, b: choice, c: cid expr, d: (arg expr, guard expr|None)
U_FETCH_INTERFACE = 113  # a: interface, c: cid expr

EXPR_TAG_NAMES = {
    value: name
    for name, value in globals().items()
    if (name.startswith("E_") or name.startswith("U_")) and isinstance(value, int)
}

# Case pattern kinds.
P_DEFAULT = 0
P_VARIANT = 1  # tycon, constructor, binder
P_PRIM_CON = 2  # value (bool or unit)
P_NIL = 3
P_CONS = 4  # head binder, tail binder
P_NONE = 5
P_SOME = 6  # binder
P_ENUM = 7  # tycon, constructor


class CaseAlt:
    __slots__ = ("binder", "binder2", "body", "kind", "match")

    def __init__(self, kind: int, body: Expr, match: Any = None, binder: str = "",
                 binder2: str = "") -> None:
        self.kind = kind
        self.body = body
        self.match = match
        self.binder = binder
        self.binder2 = binder2


@dataclass(frozen=True, slots=True)
class Builtin:
    """A builtin function: its wire name, arity (runtime nat arguments included) and code."""

    name: str
    arity: int
    impl: Callable[..., Any]


# ---------------------------------------------------------------------------------- definitions


@dataclass(frozen=True, slots=True)
class DataType:
    """A record, variant, enum or interface type definition."""

    name: Identifier
    params: tuple[TypeVarBinder, ...]
    serializable: bool
    kind: str  # "record" | "variant" | "enum" | "interface"
    fields: tuple[tuple[str, Type], ...] = ()  # record fields or variant constructors
    constructors: tuple[str, ...] = ()  # enum constructors, or variant constructor names

    def field_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)


@dataclass(frozen=True, slots=True)
class TypeSynonym:
    name: Identifier
    params: tuple[TypeVarBinder, ...]
    type: Type


@dataclass(frozen=True, slots=True)
class Choice:
    name: str
    consuming: bool
    controllers: Expr
    observers: Expr | None
    self_binder: str
    arg_binder: str
    arg_type: Type
    return_type: Type
    update: Expr


@dataclass(frozen=True, slots=True)
class TemplateKey:
    type: Type
    body: Expr  # key expression, template parameter in scope
    maintainers: Expr  # a function from the key to [Party]


@dataclass(frozen=True, slots=True)
class InterfaceInstance:
    """Methods and view of one (interface, template) pair; template parameter in scope."""

    interface: Identifier
    template: Identifier
    methods: dict[str, Expr]
    view: Expr | None


@dataclass(frozen=True, slots=True)
class Template:
    name: Identifier
    param: str
    precondition: Expr | None
    signatories: Expr
    observers: Expr
    agreement: Expr | None
    choices: dict[str, Choice]
    key: TemplateKey | None
    implements: dict[Identifier, InterfaceInstance]


@dataclass(frozen=True, slots=True)
class Interface:
    name: Identifier
    param: str
    methods: dict[str, Type]
    choices: dict[str, Choice]
    view: Type | None
    requires: tuple[Identifier, ...]
    co_implements: dict[Identifier, InterfaceInstance]


@dataclass(frozen=True, slots=True)
class ExceptionDef:
    name: Identifier
    message: Expr


@dataclass(slots=True)
class ValueDef:
    """A top-level value; its body is decoded on first use (its type is not kept: the engine
    does not type-check)."""

    name: Identifier
    _decode: Callable[[], Expr] | None
    _body: Expr | None = None

    @property
    def body(self) -> Expr:
        if self._body is None:
            assert self._decode is not None
            self._body = self._decode()
            self._decode = None
        return self._body


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    data_types: dict[str, DataType]
    synonyms: dict[str, TypeSynonym]
    templates: dict[str, Template]
    interfaces: dict[str, Interface]
    exceptions: dict[str, ExceptionDef]
    values: dict[str, ValueDef]


@dataclass(frozen=True, slots=True)
class Package:
    """One decoded DALF. `package_id` is the SHA-256 of its payload bytes."""

    package_id: str
    lf_version: str
    name: str | None
    version: str | None
    modules: dict[str, Module]
    payload: bytes = field(repr=False)
