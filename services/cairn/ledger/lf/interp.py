"""The DAML-LF interpreter: an explicit-stack (CEK-style) machine over the `ast` nodes.

Expressions are evaluated by a loop that keeps its continuation in a Python list of frames, so
deep recursion in user code (long folds, recursive functions, long `do` blocks) grows that list
instead of the Python call stack. Updates are values (`UpdateClosure`) until executed; the same
loop executes them, including `try`/`catch` (with rollback of ledger effects) and the bodies of
exercised choices. Only the short template-level expressions evaluated around ledger actions
(signatories, controllers, keys, ...) use a nested run of the loop.

`Machine` holds the state of one command: the transaction being built, the authorizing parties
and the ledger view; `Engine` (in `engine.py`) creates one per command.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cairn.ledger.lf import ast as A
from cairn.ledger.lf.ast import (
    E_ABS,
    E_APP,
    E_BUILTIN,
    E_CALL_INTERFACE,
    E_CASE,
    E_CONS,
    E_CONST,
    E_ENUMCON,
    E_EXPERIMENTAL,
    E_FROM_ANY,
    E_FROM_ANY_EXCEPTION,
    E_FROM_INTERFACE,
    E_FROM_REQUIRED_INTERFACE,
    E_INTERFACE_TYPE_REP,
    E_LET,
    E_OBSERVER_INTERFACE,
    E_RECCON,
    E_RECPROJ,
    E_RECUPD,
    E_SCENARIO,
    E_SIGNATORY_INTERFACE,
    E_SOME,
    E_STRUCTCON,
    E_STRUCTPROJ,
    E_STRUCTUPD,
    E_THROW,
    E_TO_ANY,
    E_TO_ANY_EXCEPTION,
    E_TO_INTERFACE,
    E_TO_REQUIRED_INTERFACE,
    E_TYPE_REP,
    E_UNSAFE_FROM_INTERFACE,
    E_UNSAFE_FROM_REQUIRED_INTERFACE,
    E_UPDATE,
    E_VAL,
    E_VAR,
    E_VARCON,
    E_VIEW_INTERFACE,
    P_CONS,
    P_ENUM,
    P_NIL,
    P_NONE,
    P_PRIM_CON,
    P_SOME,
    P_VARIANT,
    U_BLOCK,
    U_CREATE,
    U_CREATE_INTERFACE,
    U_EMBED,
    U_EXERCISE,
    U_EXERCISE_BY_KEY,
    U_EXERCISE_INTERFACE,
    U_FETCH,
    U_FETCH_BY_KEY,
    U_FETCH_INTERFACE,
    U_GET_TIME,
    U_LOOKUP_BY_KEY,
    U_PURE,
    U_TRY,
    Builtin,
    Identifier,
)
from cairn.ledger.lf.errors import (
    ArithmeticFailure,
    AuthorizationError,
    ContractKeyNotFound,
    ContractNotActive,
    ContractNotFound,
    DuplicateContractKey,
    EngineError,
    EvaluationLimitExceeded,
    InvalidArgument,
    PreconditionFailed,
    UnhandledException,
    WronglyTypedContract,
)
from cairn.ledger.lf.packages import PackageSet
from cairn.ledger.lf.value import (
    AnyException,
    AnyValue,
    Enum,
    GenMap,
    Record,
    Some,
    Struct,
    TypeRep,
    Unit,
    Variant,
    value_key,
)

# The stable package that defines the exceptions builtins throw (LF >= 1.14).
ARITHMETIC_ERROR = Identifier(
    "cb0552debf219cc909f51cbb5c3b41e9981d39f8f645b1f35e2ef5be2e0b858a",
    "DA.Exception.ArithmeticError",
    "ArithmeticError",
)
ARITHMETIC_ERROR_TYPE = A.TCon(ARITHMETIC_ERROR)


# ------------------------------------------------------------------------------ runtime values
class Closure:
    """A lambda with the environment it was created in (never mutated afterwards)."""

    __slots__ = ("body", "env", "params")

    def __init__(self, params: tuple[str, ...], body: A.Expr, env: dict[str, Any]) -> None:
        self.params = params
        self.body = body
        self.env = env


class PAP:
    """A partially applied closure or builtin."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Closure | Builtin, args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args


class UpdateClosure:
    """An update expression captured with its environment; executing it runs its effects."""

    __slots__ = ("env", "node")

    def __init__(self, node: A.Node, env: dict[str, Any]) -> None:
        self.node = node
        self.env = env


class DamlThrow(Exception):
    """A DAML exception in flight (unwinds machine frames to the nearest `try`)."""

    def __init__(self, payload: AnyException) -> None:
        super().__init__("DAML exception")
        self.payload = payload


# ------------------------------------------------------------------------------ ledger model
@dataclass(frozen=True)
class Contract:
    """An active contract instance with every field derived from its template."""

    contract_id: str
    template_id: Identifier
    argument: Record
    signatories: tuple[str, ...]
    observers: tuple[str, ...]
    agreement_text: str = ""
    key: Any = None
    maintainers: tuple[str, ...] = ()
    has_key: bool = False

    @property
    def stakeholders(self) -> frozenset[str]:
        return frozenset(self.signatories) | frozenset(self.observers)


class LedgerView(Protocol):
    """What the engine needs from storage: active contracts and the contract-key index."""

    def lookup_contract(self, contract_id: str) -> Contract | None:
        """The active contract with this id, or None if unknown or archived."""
        ...

    def lookup_key(self, template_id: Identifier, key: Any) -> str | None:
        """The id of the active contract of `template_id` with this key, if any."""
        ...


class EmptyLedger:
    """A ledger with no contracts (for create commands that need no reads)."""

    def lookup_contract(self, contract_id: str) -> Contract | None:
        return None

    def lookup_key(self, template_id: Identifier, key: Any) -> str | None:
        return None


@dataclass(frozen=True)
class CreatedEvent:
    contract: Contract


@dataclass
class ExercisedEvent:
    contract_id: str
    template_id: Identifier
    choice: str
    argument: Any
    consuming: bool
    acting_parties: tuple[str, ...]
    interface_id: Identifier | None = None
    choice_observers: tuple[str, ...] = ()
    children: list[Event] = field(default_factory=list)
    result: Any = None


@dataclass(frozen=True)
class FetchedEvent:
    contract_id: str
    template_id: Identifier


Event = CreatedEvent | ExercisedEvent | FetchedEvent


@dataclass
class Transaction:
    """The outcome of one command, ready to be committed atomically.

    `roots` is the transaction tree; `created` the contracts still active at the end,
    `archived` the pre-existing contracts it consumed, `input_contracts` every pre-existing
    contract it read (they must still be active at commit), `key_lookups` what it observed in
    the key index (must still hold), and `result` the value of the root exercise, if any.
    """

    roots: list[Event] = field(default_factory=list)
    created: list[Contract] = field(default_factory=list)
    archived: list[Contract] = field(default_factory=list)
    input_contracts: dict[str, Contract] = field(default_factory=dict)
    key_lookups: dict[tuple[Identifier, Any], str | None] = field(default_factory=dict)
    result: Any = None

    @property
    def archived_contract_ids(self) -> list[str]:
        return [contract.contract_id for contract in self.archived]

    @property
    def keys_needed_free(self) -> list[tuple[Identifier, Any]]:
        """(template, key) of each created keyed contract: no other active contract of the
        template may hold that key at commit (apart from ones this transaction archives)."""
        return [(c.template_id, c.key) for c in self.created if c.has_key]

    def events(self) -> list[Event]:
        """All events in pre-order (the order the JSON API reports them)."""
        out: list[Event] = []
        pending: list[Event] = list(reversed(self.roots))
        while pending:
            event = pending.pop()
            out.append(event)
            if isinstance(event, ExercisedEvent):
                pending.extend(reversed(event.children))
        return out


class _TxState:
    """Mutable per-command ledger state, snapshotted at `try` for rollback."""

    def __init__(self) -> None:
        self.local: dict[str, Contract] = {}  # contracts created by this transaction
        self.archived: dict[str, Contract] = {}  # contracts archived by this transaction
        self.inputs: dict[str, Contract] = {}
        self.keys: dict[tuple[Identifier, Any], str | None] = {}  # key overlay on the ledger
        self.key_lookups: dict[tuple[Identifier, Any], str | None] = {}
        self.children: list[Event] = []  # current parent's child list

    def snapshot(self) -> tuple[Any, ...]:
        return (dict(self.local), dict(self.archived), dict(self.keys), self.children,
                len(self.children))

    def restore(self, snap: tuple[Any, ...]) -> None:
        self.local, self.archived, self.keys = dict(snap[0]), dict(snap[1]), dict(snap[2])
        self.children = snap[3]
        del self.children[snap[4]:]


_Triple = tuple[A.Expr | None, dict[str, Any], Any]

# 23-31 s of CPU at the measured Fibonacci rate; a typical command makes under 10,000 calls.
DEFAULT_MAX_CALLS = 1_000_000

# ------------------------------------------------------------------------------ frames
K_SEQ = 0  # [K, node, subs, values, env]: evaluate subs in order, then finish node
K_CASE = 1  # (K, alts, env)
K_LET = 2  # (K, node, index, env)
K_STORE_VAL = 3  # (K, ident)
K_APPLY = 4  # (K, args): apply the returned function to args
K_EXEC = 5  # (K,): execute the returned update value
K_BLOCK = 6  # (K, node, index, env): result of binding `index` arrived
K_TRY = 7  # (K, node, env, snapshot, authorizers)
K_CATCH = 8  # (K, payload): the handler returned Optional (Update a)
K_EXERCISE_END = 9  # (K, event, saved authorizers, saved children)
K_FOLDL = 10  # (K, fn, items, next index)
K_FOLDR = 11  # (K, fn, items, next index (descending))
K_EQUAL_LIST = 12  # (K, fn, xs, ys, next index)
K_GUARD = 13  # (K, continuation data): exercise-interface guard result arrived


def _party_set(value: Any, what: str) -> frozenset[str]:
    if not isinstance(value, tuple):
        raise EngineError(f"{what} did not evaluate to a list of parties")
    return frozenset(value)


class Machine:
    """Evaluates expressions and executes updates for one command."""

    def __init__(self, packages: PackageSet, value_cache: dict[Identifier, Any],
                 ledger: LedgerView, authorizers: frozenset[str], ledger_time: int,
                 new_contract_id: Callable[[], str] | None = None,
                 readers: frozenset[str] = frozenset(),
                 max_calls: int = DEFAULT_MAX_CALLS) -> None:
        self.packages = packages
        self.values = value_cache
        self.ledger = ledger
        self.authorizers = authorizers
        # Parties whose view of the ledger the command may use (actAs and readAs).
        self.readers = authorizers | readers
        # Every loop in LF is recursion through a closure call, so bounding calls bounds time.
        self.calls_left = max_calls
        self.max_calls = max_calls
        # Top-level values under evaluation: meeting one again is a cycle, not recursion.
        self._evaluating: set[Identifier] = set()
        self.ledger_time = ledger_time
        self.state = _TxState()
        self.roots = self.state.children
        seed = secrets.token_hex(16)
        self._counter = 0
        self._new_cid = new_contract_id or (lambda: self._default_cid(seed))

    def _default_cid(self, seed: str) -> str:
        self._counter += 1
        return "00" + hashlib.sha256(f"{seed}:{self._counter}".encode()).hexdigest()

    # ------------------------------------------------------------------ public entry points
    def eval(self, expr: A.Expr, env: dict[str, Any] | None = None) -> Any:
        """Evaluate a pure expression to a value."""
        start_env = env or {}
        return self._run(lambda stack: (expr, start_env, None))

    def execute(self, update: Any) -> Any:
        """Execute an update value, returning its result."""

        def start(stack: list[Any]) -> _Triple:
            stack.append((K_EXEC,))
            return None, {}, update

        return self._run(start)

    def apply(self, fn: Any, args: tuple[Any, ...]) -> Any:
        """Apply a function value to arguments and evaluate the result."""
        return self._run(lambda stack: self._apply(fn, args, stack))

    def exercise(self, template_id: Identifier, choice: str, contract_id: str, argument: Any,
                 interface_id: Identifier | None = None) -> Any:
        """Exercise a choice as a command; returns the choice result."""
        return self._run(lambda stack: self._exercise(template_id, choice, contract_id,
                                                      argument, interface_id, stack))

    # ------------------------------------------------------------------ the loop
    def _run(self, start: Callable[[list[Any]], _Triple]) -> Any:
        stack: list[Any] = []
        expr: A.Expr | None
        env: dict[str, Any]
        value: Any
        try:
            expr, env, value = start(stack)
        except ArithmeticFailure as failure:
            raise DamlThrow(self._arithmetic_payload(failure.message)) from None
        while True:
            try:
                step, feed, pop = self._step, self._return, stack.pop
                while True:
                    if expr is not None:
                        expr, env, value = step(expr, env, stack)
                        if expr is not None:
                            continue
                    if not stack:
                        return value
                    expr, env, value = feed(pop(), value, stack)
            except (DamlThrow, ArithmeticFailure) as raised:
                payload = (raised.payload if isinstance(raised, DamlThrow)
                           else self._arithmetic_payload(raised.message))
                handled = self._unwind(payload, stack)
                if handled is None:
                    raise DamlThrow(payload) from None
                expr, env, value = handled

    def _step(self, expr: A.Expr, env: dict[str, Any], stack: list[Any]
              ) -> tuple[A.Expr | None, dict[str, Any], Any]:
        """Evaluate one expression node: produce a value or push frames and descend."""
        node: Any = expr
        tag = node.tag
        if tag == E_VAR:
            try:
                return None, env, env[node.a]
            except KeyError:
                raise EngineError(f"unbound variable {node.a}") from None
        if tag == E_CONST:
            return None, env, node.a
        if tag == E_VAL:
            ident = node.a
            cached = self.values.get(ident, _MISSING)
            if cached is not _MISSING:
                return None, env, cached
            if ident in self._evaluating:
                raise EngineError(f"value {ident.qualified_name} depends on itself")
            self._evaluating.add(ident)
            stack.append((K_STORE_VAL, ident))
            return self.packages.value(ident).body, {}, None
        if tag == E_ABS:
            return None, env, Closure(node.a, node.b, env)
        if tag == E_CASE:
            scrutinee = node.a
            if scrutinee.tag == E_VAR and scrutinee.a in env:
                return self._match(node.b, env[scrutinee.a], env)
            stack.append((K_CASE, node.b, env))
            return scrutinee, env, None
        if tag == E_LET:
            stack.append((K_LET, node, 0, env))
            return node.a[0][1], env, None
        if tag == E_BUILTIN:
            builtin = node.a
            if builtin.arity == 0:
                return None, env, builtin.impl()
            return None, env, builtin
        if tag == E_UPDATE:
            return None, env, UpdateClosure(node.a, env)
        if tag == E_ENUMCON:
            cached = node.c
            if cached is None:
                dt = self.packages.data_type(node.a)
                cached = node.c = Enum(node.a, node.b, dt.constructors.index(node.b))
            return None, env, cached
        if tag == E_TYPE_REP:
            return None, env, TypeRep(node.a)
        if tag == E_SCENARIO:
            raise EngineError("scenarios cannot run on a ledger")
        if tag == E_EXPERIMENTAL:
            raise EngineError(f"experimental feature {node.a} is not supported")
        # Everything else evaluates its sub-expressions in order, then completes.
        subs = node.subs
        if subs is None:
            subs = node.subs = _sub_expressions(node)
        values: list[Any] = []
        # Variables and constants need no frame: evaluate them inline.
        cache = self.values
        for sub in subs:
            stag = sub.tag
            if stag == E_VAR:
                try:
                    values.append(env[sub.a])
                except KeyError:
                    raise EngineError(f"unbound variable {sub.a}") from None
            elif stag == E_CONST:
                values.append(sub.a)
            elif stag == E_VAL and sub.a in cache:
                values.append(cache[sub.a])
            elif stag == E_BUILTIN and sub.a.arity:
                values.append(sub.a)
            else:
                break
        if len(values) == len(subs):
            return self._finish(node, values, env, stack)
        stack.append([K_SEQ, node, subs, values, env])
        return subs[len(values)], env, None

    def _return(self, frame: Any, value: Any, stack: list[Any]
                ) -> tuple[A.Expr | None, dict[str, Any], Any]:
        """Feed a value to the top continuation frame."""
        kind = frame[0]
        if kind == K_SEQ:
            node, subs, values, env = frame[1], frame[2], frame[3], frame[4]
            values.append(value)
            n = len(subs)
            cache = self.values
            while len(values) < n:
                sub = subs[len(values)]
                stag = sub.tag
                if stag == E_VAR:
                    values.append(env[sub.a])
                elif stag == E_CONST:
                    values.append(sub.a)
                elif stag == E_VAL and sub.a in cache:
                    values.append(cache[sub.a])
                elif stag == E_BUILTIN and sub.a.arity:
                    values.append(sub.a)
                else:
                    stack.append(frame)
                    return sub, env, None
            return self._finish(node, values, env, stack)
        if kind == K_EXEC:
            return self._exec(value, stack)
        if kind == K_CASE:
            return self._match(frame[1], value, frame[2])
        if kind == K_LET:
            node, index, env = frame[1], frame[2], frame[3]
            bindings = node.a
            env = {**env, bindings[index][0]: value}
            index += 1
            if index < len(bindings):
                stack.append((K_LET, node, index, env))
                return bindings[index][1], env, None
            return node.b, env, None
        if kind == K_STORE_VAL:
            self.values[frame[1]] = value
            self._evaluating.discard(frame[1])
            return None, {}, value
        if kind == K_APPLY:
            return self._apply(value, frame[1], stack)
        if kind == K_BLOCK:
            node, index, env = frame[1], frame[2], frame[3]
            bindings = node.a
            env = {**env, bindings[index][0]: value}
            index += 1
            if index < len(bindings):
                stack.append((K_BLOCK, node, index, env))
                stack.append((K_EXEC,))
                return bindings[index][1], env, None
            stack.append((K_EXEC,))
            return node.b, env, None
        if kind == K_FOLDL:
            fn, items, index = frame[1], frame[2], frame[3]
            if index >= len(items):
                return None, {}, value
            stack.append((K_FOLDL, fn, items, index + 1))
            self._charge()
            return self._apply(fn, (value, items[index]), stack)
        if kind == K_FOLDR:
            fn, items, index = frame[1], frame[2], frame[3]
            if index < 0:
                return None, {}, value
            stack.append((K_FOLDR, fn, items, index - 1))
            self._charge()
            return self._apply(fn, (items[index], value), stack)
        if kind == K_EQUAL_LIST:
            fn, xs, ys, index = frame[1], frame[2], frame[3], frame[4]
            if value is not True or index >= len(xs):
                return None, {}, value
            stack.append((K_EQUAL_LIST, fn, xs, ys, index + 1))
            return self._apply(fn, (xs[index], ys[index]), stack)
        if kind == K_TRY:
            return None, {}, value  # body finished without throwing
        if kind == K_CATCH:
            if value is None:
                raise DamlThrow(frame[1])
            stack.append((K_EXEC,))
            return None, {}, value.value
        if kind == K_EXERCISE_END:
            event, saved_authorizers, saved_children = frame[1], frame[2], frame[3]
            check_nesting(value, f"result of choice {event.choice}")
            event.result = value
            self.authorizers = saved_authorizers
            self.state.children = saved_children
            return None, {}, value
        if kind == K_GUARD:
            if value is not True:
                iface, cid = frame[1][0], frame[1][3]
                raise EngineError(f"Exercise guard of interface {iface.qualified_name} failed "
                                  f"for contract {cid}")
            data = frame[1]
            return self._exercise(data[1], data[2], data[3], data[4], data[5], stack)
        raise EngineError(f"internal error: unknown frame {kind}")

    def _charge(self) -> None:
        """Count one step of a builtin fold against the call budget."""
        self.calls_left -= 1
        if self.calls_left < 0:
            raise EvaluationLimitExceeded(
                f"Interpretation exceeded the limit of {self.max_calls} function calls")

    # ------------------------------------------------------------------ application
    def _apply(self, fn: Any, args: tuple[Any, ...], stack: list[Any]
               ) -> tuple[A.Expr | None, dict[str, Any], Any]:
        ft = type(fn)
        if ft is PAP:
            args = fn.args + tuple(args)
            fn = fn.fn
            ft = type(fn)
        if ft is Closure:
            params = fn.params
            n = len(params)
            if len(args) < n:
                return None, {}, PAP(fn, tuple(args))
            self.calls_left -= 1
            if self.calls_left < 0:
                raise EvaluationLimitExceeded(
                    f"Interpretation exceeded the limit of {self.max_calls} function calls")
            env = dict(fn.env)
            for i in range(n):
                env[params[i]] = args[i]
            if len(args) > n:
                stack.append((K_APPLY, tuple(args[n:])))
            return fn.body, env, None
        if ft is Builtin:
            arity = fn.arity
            if len(args) < arity:
                return None, {}, PAP(fn, tuple(args))
            if len(args) > arity:
                stack.append((K_APPLY, tuple(args[arity:])))
                args = args[:arity]
            name = fn.name
            if name == "FOLDL":
                f, acc, items = args
                stack.append((K_FOLDL, f, items, 0))
                return None, {}, acc
            if name == "FOLDR":
                f, acc, items = args
                stack.append((K_FOLDR, f, items, len(items) - 1))
                return None, {}, acc
            if name == "EQUAL_LIST":
                f, xs, ys = args
                if len(xs) != len(ys):
                    return None, {}, False
                stack.append((K_EQUAL_LIST, f, xs, ys, 0))
                return None, {}, True
            if name == "ANY_EXCEPTION_MESSAGE":
                return None, {}, self.exception_message(args[0])
            return None, {}, fn.impl(*args)
        raise EngineError(f"cannot apply a non-function value ({ft.__name__})")

    # ------------------------------------------------------------------ node completion
    def _finish(self, node: Any, values: list[Any], env: dict[str, Any], stack: list[Any]
                ) -> tuple[A.Expr | None, dict[str, Any], Any]:
        tag = node.tag
        if tag == E_APP:
            return self._apply(values[0], tuple(values[1:]), stack)
        if tag == E_RECPROJ:
            record = values[0]
            try:
                return None, env, record.values[record.fields.index(node.b)]
            except (ValueError, AttributeError):
                raise EngineError(f"record {node.a} has no field {node.b}") from None
        if tag == E_RECCON:
            return None, env, Record(node.a, node.b, tuple(values))
        if tag == E_CONS:
            tail = values[-1]
            return None, env, tuple(values[:-1]) + tail
        if tag == E_SOME:
            return None, env, Some(values[0])
        if tag == E_VARCON:
            rank = node.d
            if rank is None:
                rank = node.d = self.packages.data_type(node.a).constructors.index(node.b)
            return None, env, Variant(node.a, node.b, values[0], rank)
        if tag == E_RECUPD:
            record = values[0]
            index = record.fields.index(node.b)
            new_values = list(record.values)
            new_values[index] = values[1]
            return None, env, Record(record.tycon, record.fields, tuple(new_values))
        if tag == E_STRUCTCON:
            return None, env, Struct(node.b, tuple(values))
        if tag == E_STRUCTPROJ:
            return None, env, values[0].get(node.b)
        if tag == E_STRUCTUPD:
            struct = values[0]
            new_values = list(struct.values)
            new_values[struct.fields.index(node.b)] = values[1]
            return None, env, Struct(struct.fields, tuple(new_values))
        if tag == E_TO_ANY:
            return None, env, AnyValue(node.a, values[0])
        if tag == E_FROM_ANY:
            packed = values[0]
            return None, env, Some(packed.value) if packed.type == node.a else None
        if tag == E_TO_ANY_EXCEPTION:
            return None, env, AnyException(node.a, values[0])
        if tag == E_FROM_ANY_EXCEPTION:
            packed = values[0]
            return None, env, Some(packed.value) if packed.type == node.a else None
        if tag == E_THROW:
            raise DamlThrow(AnyException(node.a, values[0]))
        if tag in _INTERFACE_TAGS:
            return self._interface_expr(node, values, env, stack)
        if tag >= U_PURE:
            return self._ledger_action(node, values, stack)
        raise EngineError(f"internal error: cannot evaluate node {node!r}")

    def _match(self, alts: tuple[A.CaseAlt, ...], value: Any, env: dict[str, Any]
               ) -> tuple[A.Expr | None, dict[str, Any], Any]:
        vt = type(value)
        for alt in alts:
            kind = alt.kind
            if kind == P_VARIANT:
                if vt is Variant and value.constructor == alt.match:
                    binder = alt.binder
                    return alt.body, {**env, binder: value.value} if binder else env, None
            elif kind == P_PRIM_CON:
                if value is alt.match or (vt is Unit and type(alt.match) is Unit):
                    return alt.body, env, None
            elif kind == P_CONS:
                if vt is tuple and value:
                    return alt.body, {**env, alt.binder: value[0], alt.binder2: value[1:]}, None
            elif kind == P_NIL:
                if vt is tuple and not value:
                    return alt.body, env, None
            elif kind == P_SOME:
                if vt is Some:
                    return alt.body, {**env, alt.binder: value.value}, None
            elif kind == P_NONE:
                if value is None:
                    return alt.body, env, None
            elif kind == P_ENUM:
                if vt is Enum and value.constructor == alt.match:
                    return alt.body, env, None
            else:  # default
                return alt.body, env, None
        raise EngineError(f"match error: no case alternative matches {value!r}")

    # ------------------------------------------------------------------ exceptions
    def _arithmetic_payload(self, message: str) -> AnyException:
        return AnyException(ARITHMETIC_ERROR_TYPE,
                            Record(ARITHMETIC_ERROR, ("message",), (message,)))

    def _unwind(self, payload: AnyException, stack: list[Any]
                ) -> tuple[A.Expr | None, dict[str, Any], Any] | None:
        """Pop frames to the nearest `try`; roll back its effects and run its handler."""
        while stack:
            frame = stack.pop()
            kind = frame[0]
            if kind == K_EXERCISE_END:
                self.authorizers = frame[2]
                self.state.children = frame[3]
            elif kind == K_STORE_VAL:
                self._evaluating.discard(frame[1])
            elif kind == K_TRY:
                node, env, snapshot, authorizers = frame[1], frame[2], frame[3], frame[4]
                self.state.restore(snapshot)
                self.authorizers = authorizers
                stack.append((K_CATCH, payload))
                return node.c, {**env, node.b: payload}, None
        return None

    def exception_message(self, payload: AnyException) -> str:
        """The message of a thrown exception, via its `message` method when defined."""
        exc_type = payload.type
        if isinstance(exc_type, A.TCon):
            definition = self.packages.exception(exc_type.tycon)
            if definition is not None:
                message_fn = self.eval(definition.message)
                text = self.apply(message_fn, (payload.value,))
                return str(text)
        value = payload.value
        if isinstance(value, Record) and "message" in value.fields:
            return str(value.get("message"))
        return repr(value)

    # ------------------------------------------------------------------ updates
    def _exec(self, update: Any, stack: list[Any]
              ) -> tuple[A.Expr | None, dict[str, Any], Any]:
        if type(update) is not UpdateClosure:
            raise EngineError(f"expected an update, got {type(update).__name__}")
        node = update.node
        env = update.env
        tag = node.tag
        if tag == U_PURE:
            return node.a, env, None
        if tag == U_BLOCK:
            stack.append((K_BLOCK, node, 0, env))
            stack.append((K_EXEC,))
            return node.a[0][1], env, None
        if tag == U_EMBED:
            stack.append((K_EXEC,))
            return node.a, env, None
        if tag == U_GET_TIME:
            return None, env, self.ledger_time
        if tag == U_TRY:
            stack.append((K_TRY, node, env, self.state.snapshot(), self.authorizers))
            stack.append((K_EXEC,))
            return node.a, env, None
        # Ledger actions: evaluate operands (K_SEQ), then `_ledger_action`.
        return self._step(node, env, stack)

    def _ledger_action(self, node: Any, values: list[Any], stack: list[Any]
                       ) -> tuple[A.Expr | None, dict[str, Any], Any]:
        tag = node.tag
        if tag == U_CREATE:
            return None, {}, self.create(node.a, values[0])
        if tag == U_CREATE_INTERFACE:
            record = values[0]
            return None, {}, self.create(record.tycon, record)
        if tag == U_EXERCISE:
            return self._exercise(node.a, node.b, values[0], values[1], None, stack)
        if tag == U_EXERCISE_BY_KEY:
            cid = self.lookup_key(node.a, values[0])
            if cid is None:
                raise ContractKeyNotFound(f"dependency error: couldn't find key "
                                          f"{node.a.qualified_name} {values[0]!r}")
            return self._exercise(node.a, node.b, cid, values[1], None, stack)
        if tag == U_EXERCISE_INTERFACE:
            cid, arg = values[0], values[1]
            guard = values[2] if len(values) > 2 else None
            if guard is not None:
                contract = self.fetch_contract(cid, None)
                stack.append((K_GUARD, (node.a, node.a, node.b, cid, arg, node.a)))
                return self._apply(guard, (contract.argument,), stack)
            return self._exercise(node.a, node.b, cid, arg, node.a, stack)
        if tag == U_FETCH:
            contract = self.fetch_contract(values[0], node.a)
            self._check_fetch_authorization(contract)
            return None, {}, contract.argument
        if tag == U_FETCH_INTERFACE:
            contract = self.fetch_contract(values[0], None)
            self.implementation(node.a, contract.template_id)
            self._check_fetch_authorization(contract)
            return None, {}, contract.argument
        if tag == U_LOOKUP_BY_KEY:
            self._check_key_authorization(node.a, values[0])
            cid = self.lookup_key(node.a, values[0])
            return None, {}, Some(cid) if cid is not None else None
        if tag == U_FETCH_BY_KEY:
            cid = self.lookup_key(node.a, values[0])
            if cid is None:
                raise ContractKeyNotFound(f"dependency error: couldn't find key "
                                          f"{node.a.qualified_name} {values[0]!r}")
            contract = self.fetch_contract(cid, node.a)
            self._check_fetch_authorization(contract)
            return None, {}, Struct(("contract", "contractId"), (contract.argument, cid))
        raise EngineError(f"internal error: unknown update {node!r}")

    # ------------------------------------------------------------------ ledger operations
    def create(self, template_id: Identifier, argument: Any) -> str:
        """Create a contract: evaluate precondition and derived fields, check and record it."""
        template = self.packages.template(template_id)
        if not isinstance(argument, Record) or argument.tycon != template_id:
            raise WronglyTypedContract(f"create of {template_id.qualified_name} with an argument "
                                       f"of the wrong type")
        check_nesting(argument, f"create argument of {template_id.qualified_name}")
        env = {template.param: argument}
        if template.precondition is not None:
            ok = self.eval(template.precondition, env)
            if ok is not True:
                raise PreconditionFailed(f"Template precondition violated in: create "
                                         f"{template_id.qualified_name}")
        agreement = self.eval(template.agreement, env) if template.agreement else ""
        signatories = _party_set(self.eval(template.signatories, env), "signatories")
        observers = _party_set(self.eval(template.observers, env), "observers")
        key = None
        maintainers: frozenset[str] = frozenset()
        if template.key is not None:
            key = self.eval(template.key.body, env)
            maintainers_fn = self.eval(template.key.maintainers)
            maintainers = _party_set(self.apply(maintainers_fn, (key,)), "maintainers")
        if not signatories:
            raise AuthorizationError(f"Create of {template_id.qualified_name} has no signatories")
        missing = signatories - self.authorizers
        if missing:
            raise AuthorizationError(
                f"Create of {template_id.qualified_name} requires authorization from "
                f"{', '.join(sorted(missing))} (authorizing parties: "
                f"{', '.join(sorted(self.authorizers))})")
        if template.key is not None:
            if not maintainers:
                raise AuthorizationError(f"Create of {template_id.qualified_name}: the contract "
                                         f"key has no maintainers")
            if not maintainers <= signatories:
                raise AuthorizationError(f"Create of {template_id.qualified_name}: key "
                                         f"maintainers must be signatories")
            if self.lookup_key(template_id, key) is not None:
                raise DuplicateContractKey(f"Duplicate contract key for template "
                                           f"{template_id.qualified_name}")
        cid = self._new_cid()
        contract = Contract(
            contract_id=cid,
            template_id=template_id,
            argument=argument,
            signatories=tuple(sorted(signatories)),
            observers=tuple(sorted(observers - signatories)),
            agreement_text=agreement,
            key=key,
            maintainers=tuple(sorted(maintainers)),
            has_key=template.key is not None,
        )
        self.state.local[cid] = contract
        if template.key is not None:
            self.state.keys[(template_id, value_key(key))] = cid
        self.state.children.append(CreatedEvent(contract))
        return cid

    def fetch_contract(self, contract_id: Any, template_id: Identifier | None) -> Contract:
        """An active contract (local to the transaction or on the ledger)."""
        if not isinstance(contract_id, str):
            raise EngineError("contract id expected")
        state = self.state
        archived = state.archived.get(contract_id)
        if archived is not None:
            raise ContractNotActive(contract_id, archived.template_id.qualified_name)
        contract = state.local.get(contract_id) or state.inputs.get(contract_id)
        if contract is None:
            contract = self.ledger.lookup_contract(contract_id)
            # A contract none of the submitting parties can see does not exist for them.
            if contract is None or not contract.stakeholders & self.readers:
                raise ContractNotFound(contract_id)
            state.inputs[contract_id] = contract
        if template_id is not None and contract.template_id != template_id:
            raise WronglyTypedContract(
                f"Contract {contract_id} is of template {contract.template_id.qualified_name}, "
                f"expected {template_id.qualified_name}")
        return contract

    def lookup_key(self, template_id: Identifier, key: Any) -> str | None:
        index = (template_id, value_key(key))
        state = self.state
        if index in state.keys:
            return state.keys[index]
        cid = self.ledger.lookup_key(template_id, key)
        state.key_lookups.setdefault(index, cid)
        if cid is not None and cid in state.archived:
            cid = None
        return cid

    def _check_fetch_authorization(self, contract: Contract) -> None:
        """Fetches need a stakeholder among the authorizers; record the fetch node."""
        if not contract.stakeholders & self.authorizers:
            raise AuthorizationError(
                f"Fetch of {contract.template_id.qualified_name} {contract.contract_id} requires "
                f"one of its stakeholders ({', '.join(sorted(contract.stakeholders))}) among the "
                f"authorizing parties ({', '.join(sorted(self.authorizers))})")
        self.state.children.append(FetchedEvent(contract.contract_id, contract.template_id))

    def _check_key_authorization(self, template_id: Identifier, key: Any) -> None:
        template = self.packages.template(template_id)
        if template.key is None:
            raise InvalidArgument(f"Template {template_id.qualified_name} has no key")
        maintainers_fn = self.eval(template.key.maintainers)
        maintainers = _party_set(self.apply(maintainers_fn, (key,)), "maintainers")
        missing = maintainers - self.authorizers
        if missing:
            raise AuthorizationError(
                f"Lookup by key of {template_id.qualified_name} requires authorization from "
                f"the key maintainers {', '.join(sorted(missing))}")

    def implementation(self, interface_id: Identifier, template_id: Identifier
                        ) -> A.InterfaceInstance:
        template = self.packages.template(template_id)
        instance = template.implements.get(interface_id)
        if instance is None:
            interface = self.packages.find_interface(interface_id)
            if interface is not None:
                instance = interface.co_implements.get(template_id)
        if instance is None:
            raise WronglyTypedContract(f"Template {template_id.qualified_name} does not "
                                       f"implement interface {interface_id.qualified_name}")
        return instance

    def _exercise(self, template_id: Identifier, choice_name: str, contract_id: Any,
                  argument: Any, interface_id: Identifier | None, stack: list[Any]
                  ) -> tuple[A.Expr | None, dict[str, Any], Any]:
        """Start an exercise; its body then runs in the machine (frame K_EXERCISE_END)."""
        if interface_id is not None:
            contract = self.fetch_contract(contract_id, None)
            self.implementation(interface_id, contract.template_id)
            interface = self.packages.interface(interface_id)
            choice = interface.choices.get(choice_name)
            param = interface.param
        else:
            contract = self.fetch_contract(contract_id, template_id)
            template = self.packages.template(template_id)
            choice = template.choices.get(choice_name)
            param = template.param
        if choice is None:
            where = interface_id or template_id
            raise InvalidArgument(f"Unknown choice {choice_name} of {where.qualified_name}")
        env = {param: contract.argument, choice.self_binder: contract_id,
               choice.arg_binder: argument}
        controllers = _party_set(self.eval(choice.controllers, env), "controllers")
        choice_observers: frozenset[str] = frozenset()
        if choice.observers is not None:
            choice_observers = _party_set(self.eval(choice.observers, env), "choice observers")
        check_nesting(argument, f"argument of choice {choice_name}")
        if not controllers:
            raise AuthorizationError(f"Exercise of {choice_name} has no controllers")
        missing = controllers - self.authorizers
        if missing:
            raise AuthorizationError(
                f"Exercise of {choice_name} on {contract.template_id.qualified_name} requires "
                f"authorization from {', '.join(sorted(missing))} (authorizing parties: "
                f"{', '.join(sorted(self.authorizers))})")
        event = ExercisedEvent(
            contract_id=contract_id,
            template_id=contract.template_id,
            choice=choice_name,
            argument=argument,
            consuming=choice.consuming,
            acting_parties=tuple(sorted(controllers)),
            interface_id=interface_id,
            choice_observers=tuple(sorted(choice_observers)),
        )
        state = self.state
        state.children.append(event)
        if choice.consuming:
            state.archived[contract_id] = contract
            if contract.has_key:
                state.keys[(contract.template_id, value_key(contract.key))] = None
        stack.append((K_EXERCISE_END, event, self.authorizers, state.children))
        self.authorizers = frozenset(contract.signatories) | controllers
        state.children = event.children
        body = self.eval(choice.update, env)
        stack.append((K_EXEC,))
        return None, {}, body

    # ------------------------------------------------------------------ interfaces
    def _interface_expr(self, node: Any, values: list[Any], env: dict[str, Any],
                        stack: list[Any]) -> tuple[A.Expr | None, dict[str, Any], Any]:
        tag = node.tag
        payload = values[-1]
        if tag in (E_TO_INTERFACE, E_TO_REQUIRED_INTERFACE):
            return None, env, payload
        if tag == E_FROM_INTERFACE:
            return None, env, Some(payload) if payload.tycon == node.b else None
        if tag == E_UNSAFE_FROM_INTERFACE:
            if payload.tycon != node.b:
                raise WronglyTypedContract(f"Contract {values[0]} is not of template "
                                           f"{node.b.qualified_name}")
            return None, env, payload
        if tag in (E_FROM_REQUIRED_INTERFACE, E_UNSAFE_FROM_REQUIRED_INTERFACE):
            template = self.packages.template(payload.tycon)
            interface = self.packages.find_interface(node.b)
            implements = node.b in template.implements or (
                interface is not None and payload.tycon in interface.co_implements)
            if tag == E_FROM_REQUIRED_INTERFACE:
                return None, env, Some(payload) if implements else None
            if not implements:
                raise WronglyTypedContract(f"Contract {values[0]} does not implement "
                                           f"{node.b.qualified_name}")
            return None, env, payload
        template = self.packages.template(payload.tycon)
        template_env = {template.param: payload}
        if tag == E_INTERFACE_TYPE_REP:
            return None, env, TypeRep(A.TCon(payload.tycon))
        if tag == E_SIGNATORY_INTERFACE:
            return template.signatories, template_env, None
        if tag == E_OBSERVER_INTERFACE:
            return template.observers, template_env, None
        instance = self.implementation(node.a, payload.tycon)
        if tag == E_VIEW_INTERFACE:
            if instance.view is None:
                raise EngineError(f"interface {node.a.qualified_name} has no view")
            return instance.view, template_env, None
        if tag == E_CALL_INTERFACE:
            method = instance.methods.get(node.b)
            if method is None:
                raise EngineError(f"method {node.b} of {node.a.qualified_name} is not "
                                  f"implemented by {payload.tycon.qualified_name}")
            return method, template_env, None
        raise EngineError(f"internal error: unknown interface expression {node!r}")


MAX_VALUE_NESTING = 100


def check_nesting(value: Any, what: str) -> None:
    """Reject serializable values nested deeper than the LF limit of 100 (iteratively)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_VALUE_NESTING:
            raise InvalidArgument(f"Value exceeds the maximum nesting depth of "
                                  f"{MAX_VALUE_NESTING} in {what}")
        kind = type(item)
        if kind is Record:
            pending.extend((v, depth + 1) for v in item.values)
        elif kind is Variant or kind is Some:
            pending.append((item.value, depth + 1))
        elif kind is tuple:
            pending.extend((v, depth + 1) for v in item)
        elif kind is dict:
            pending.extend((v, depth + 1) for v in item.values())
        elif kind is GenMap:
            for key, entry in item.entries:
                pending.append((key, depth + 1))
                pending.append((entry, depth + 1))


_MISSING = object()
_INTERFACE_TAGS = frozenset({
    E_TO_INTERFACE, E_FROM_INTERFACE, E_UNSAFE_FROM_INTERFACE, E_CALL_INTERFACE,
    E_VIEW_INTERFACE, E_SIGNATORY_INTERFACE, E_OBSERVER_INTERFACE,
    E_INTERFACE_TYPE_REP, E_TO_REQUIRED_INTERFACE, E_FROM_REQUIRED_INTERFACE,
    E_UNSAFE_FROM_REQUIRED_INTERFACE,
})


def _sub_expressions(node: Any) -> tuple[A.Expr, ...]:
    """Operands a node evaluates, in evaluation order."""
    tag = node.tag
    if tag == E_APP:
        return (node.a, *node.b)
    if tag in (E_RECCON, E_STRUCTCON):
        return tuple(node.c)
    if tag in (E_RECPROJ, E_STRUCTPROJ):
        return (node.c,)
    if tag in (E_RECUPD, E_STRUCTUPD):
        return (node.c, node.d)
    if tag == E_VARCON:
        return (node.c,)
    if tag == E_CONS:
        return (*node.a, node.b)
    if tag == E_SOME:
        return (node.a,)
    if tag in (E_TO_ANY, E_FROM_ANY, E_TO_ANY_EXCEPTION, E_FROM_ANY_EXCEPTION,
               E_THROW):
        return (node.b,)
    if tag in (E_UNSAFE_FROM_INTERFACE, E_UNSAFE_FROM_REQUIRED_INTERFACE):
        return (node.c, node.d)
    if tag in _INTERFACE_TAGS:
        return (node.c,)
    if tag in (U_CREATE, U_CREATE_INTERFACE):
        return (node.b,)
    if tag in (U_EXERCISE, U_EXERCISE_BY_KEY):
        return (node.c, node.d)
    if tag == U_EXERCISE_INTERFACE:
        arg, guard = node.d
        return (node.c, arg) if guard is None else (node.c, arg, guard)
    if tag in (U_FETCH, U_FETCH_INTERFACE, U_LOOKUP_BY_KEY, U_FETCH_BY_KEY):
        return (node.c,)
    raise EngineError(f"internal error: no operands for node {node!r}")


def unhandled(machine: Machine, payload: AnyException) -> EngineError:
    """The client-facing error for an exception that escaped the command."""
    name = (payload.type.tycon.qualified_name if isinstance(payload.type, A.TCon)
            else repr(payload.type))
    try:
        message = machine.exception_message(payload)
    except (EngineError, DamlThrow, ArithmeticFailure):
        message = repr(payload.value)
    if name == "DA.Exception.PreconditionFailed:PreconditionFailed":
        # damlc (LF >= 1.14) compiles a failing `ensure` into this exception.
        return PreconditionFailed(message)
    return UnhandledException(f"Unhandled Daml exception: {name}: {message}")


__all__ = [
    "Closure",
    "Contract",
    "CreatedEvent",
    "DamlThrow",
    "EmptyLedger",
    "ExercisedEvent",
    "FetchedEvent",
    "LedgerView",
    "Machine",
    "Transaction",
]
