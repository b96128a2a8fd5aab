"""The command-level API of the DAML-LF engine: create, exercise, exercise-by-key and
create-and-exercise, each producing a `Transaction` for the storage layer to commit.

The engine is stateless between commands apart from caches: decoded packages (by id) and the
values of top-level definitions (pure, so safe to share). Storage is reached only through the
`LedgerView` protocol passed to each command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from cairn.ledger.lf.ast import Choice, Identifier, Package, Template, Type
from cairn.ledger.lf.dar import Dar
from cairn.ledger.lf.decode import DecodeError
from cairn.ledger.lf.errors import ArithmeticFailure, EngineError, InvalidArgument, InvalidPackage
from cairn.ledger.lf.interp import (
    DEFAULT_MAX_CALLS,
    Contract,
    CreatedEvent,
    DamlThrow,
    EmptyLedger,
    ExercisedEvent,
    FetchedEvent,
    LedgerView,
    Machine,
    Transaction,
    unhandled,
)
from cairn.ledger.lf.packages import PackageSet
from cairn.ledger.lf.value import Record
from cairn.ledger.lf.wire import WireError

__all__ = [
    "Contract",
    "CreatedEvent",
    "Engine",
    "ExercisedEvent",
    "FetchedEvent",
    "LedgerView",
    "Transaction",
]


def _now_micros() -> int:
    return time.time_ns() // 1000


class Engine:
    """Interprets commands against loaded packages."""

    def __init__(self, packages: PackageSet | Iterable[Package] = (), *,
                 max_calls: int = DEFAULT_MAX_CALLS) -> None:
        self.packages = packages if isinstance(packages, PackageSet) else PackageSet(packages)
        self._value_cache: dict[Identifier, Any] = {}
        # Upper bound on closure calls (and fold steps) per command: stops runaway recursion.
        self.max_calls = max_calls

    def add_dar(self, dar: Dar) -> None:
        for package in dar.packages.values():
            self.packages.add(package)

    # ------------------------------------------------------------------ introspection
    def template(self, template_id: Identifier) -> Template:
        return self.packages.template(template_id)

    def choice(self, template_or_interface: Identifier, choice: str) -> Choice:
        """A template's (or interface's) choice, for its argument and return types."""
        template = self.packages.find_template(template_or_interface)
        if template is not None:
            found = template.choices.get(choice)
        else:
            found = self.packages.interface(template_or_interface).choices.get(choice)
        if found is None:
            raise InvalidArgument(f"Unknown choice {choice} of "
                                  f"{template_or_interface.qualified_name}")
        return found

    def resolve_choice(self, target: Identifier, choice: str,
                       choice_interface_id: Identifier | None = None
                       ) -> tuple[Identifier | None, Choice]:
        """Find the choice an exercise command names, as the JSON API does.

        `target` is a template or an interface id. With `choice_interface_id` the choice must
        be declared on that interface. Otherwise a choice declared on the template wins over
        choices inherited from interfaces it implements. A name inherited from more than one
        interface is ambiguous. Returns (interface id to exercise through, or None; choice).
        """
        if choice_interface_id is not None or self.packages.find_template(target) is None:
            interface_id = choice_interface_id or target
            found = self.packages.interface(interface_id).choices.get(choice)
            if found is None:
                raise InvalidArgument(f"Unknown choice {choice} of interface "
                                      f"{interface_id.qualified_name}")
            return interface_id, found
        own = self.packages.template(target).choices.get(choice)
        if own is not None:
            return None, own
        candidates = [(interface_id, self.packages.interface(interface_id).choices[choice])
                      for interface_id in self.packages.implemented_interfaces(target)
                      if choice in self.packages.interface(interface_id).choices]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            names = ", ".join(sorted(i.qualified_name for i, _ in candidates))
            raise InvalidArgument(f"Cannot resolve Choice Argument type, given: "
                                  f"({target.qualified_name}, {choice}); it is inherited from "
                                  f"several interfaces: {names}")
        raise InvalidArgument(f"Cannot resolve Choice Argument type, given: "
                              f"({target.qualified_name}, {choice})")

    def key_type(self, template_id: Identifier) -> Type:
        template = self.packages.template(template_id)
        if template.key is None:
            raise InvalidArgument(f"Template {template_id.qualified_name} has no key")
        return template.key.type

    def interface_view(self, interface_id: Identifier, contract: Contract) -> Any:
        """The interface view of a contract (the payload the JSON API shows for interface
        queries); raises if its template does not implement the interface."""
        machine = self._machine([*contract.signatories], None, None, None)
        instance = machine.implementation(interface_id, contract.template_id)
        if instance.view is None:
            raise InvalidArgument(f"Interface {interface_id.qualified_name} has no view")
        template = self.packages.template(contract.template_id)
        view = instance.view
        return self._evaluate(machine, lambda: machine.eval(
            view, {template.param: contract.argument}))

    # ------------------------------------------------------------------ commands
    def _machine(self, act_as: Iterable[str], ledger: LedgerView | None,
                 ledger_time: int | None, new_contract_id: Callable[[], str] | None,
                 read_as: Iterable[str] = (), max_calls: int | None = None) -> Machine:
        if isinstance(act_as, str) or isinstance(read_as, str):
            raise TypeError("act_as and read_as take collections of parties, not a string")
        parties = frozenset(act_as)
        if not parties:
            raise InvalidArgument("Expected one or more parties in actAs but got none")
        return Machine(self.packages, self._value_cache, ledger or EmptyLedger(), parties,
                       _now_micros() if ledger_time is None else ledger_time, new_contract_id,
                       frozenset(read_as), self.max_calls if max_calls is None else max_calls)

    def _transaction(self, machine: Machine, result: Any) -> Transaction:
        state = machine.state
        created = [c for cid, c in state.local.items() if cid not in state.archived]
        archived = [c for cid, c in state.archived.items() if cid not in state.local]
        return Transaction(roots=machine.roots, created=created, archived=archived,
                           input_contracts=dict(state.inputs),
                           key_lookups=dict(state.key_lookups), result=result)

    def _evaluate(self, machine: Machine, command: Callable[[], Any]) -> Any:
        """Run `command` on `machine`, turning every failure into an `EngineError`."""
        try:
            return command()
        except DamlThrow as thrown:
            raise unhandled(machine, thrown.payload) from None
        except ArithmeticFailure as failure:
            raise EngineError(failure.message) from None
        except RecursionError:
            raise EngineError("evaluation nested too deeply") from None
        except (DecodeError, WireError) as exc:
            raise InvalidPackage(f"invalid package definition: {exc}") from None
        except EngineError:
            raise
        except (TypeError, AttributeError, IndexError, KeyError, ValueError) as exc:
            # Packages are not type-checked: an ill-typed one surfaces here as a Python error
            # in the interpreter. It fails the command instead of escaping as a crash.
            raise EngineError(f"Interpretation failed (ill-typed package or engine defect): "
                              f"{type(exc).__name__}: {exc}") from exc

    def _run(self, machine: Machine, command: Callable[[], Any]) -> Transaction:
        result = self._evaluate(machine, command)
        return self._transaction(machine, result)

    def create(self, template_id: Identifier, argument: Record, *, act_as: Iterable[str],
               read_as: Iterable[str] = (), ledger: LedgerView | None = None,
               ledger_time: int | None = None,
               new_contract_id: Callable[[], str] | None = None,
               max_calls: int | None = None) -> Transaction:
        """Create one contract; `Transaction.result` is its contract id. In every command
        `max_calls` replaces the engine's call budget (EvaluationLimitExceeded past it)."""
        machine = self._machine(act_as, ledger, ledger_time, new_contract_id, read_as, max_calls)
        return self._run(machine, lambda: machine.create(template_id, argument))

    def exercise(self, contract_id: str, choice: str, argument: Any, *, act_as: Iterable[str],
                 ledger: LedgerView, read_as: Iterable[str] = (),
                 template_id: Identifier | None = None, interface_id: Identifier | None = None,
                 ledger_time: int | None = None,
                 new_contract_id: Callable[[], str] | None = None,
                 max_calls: int | None = None) -> Transaction:
        """Exercise `choice` on an active contract; `Transaction.result` is the choice result.

        Without `template_id` the contract's own template is used; with `interface_id` the
        choice is looked up on that interface.
        """
        machine = self._machine(act_as, ledger, ledger_time, new_contract_id, read_as, max_calls)

        def command() -> Any:
            contract = machine.fetch_contract(contract_id, None)
            target = template_id or contract.template_id
            return machine.exercise(target, choice, contract_id, argument, interface_id)

        return self._run(machine, command)

    def exercise_by_key(self, template_id: Identifier, key: Any, choice: str, argument: Any, *,
                        act_as: Iterable[str], ledger: LedgerView, read_as: Iterable[str] = (),
                        ledger_time: int | None = None,
                        new_contract_id: Callable[[], str] | None = None,
                        max_calls: int | None = None) -> Transaction:
        machine = self._machine(act_as, ledger, ledger_time, new_contract_id, read_as, max_calls)

        def command() -> Any:
            contract_id = machine.lookup_key(template_id, key)
            if contract_id is None:
                from cairn.ledger.lf.errors import ContractKeyNotFound

                raise ContractKeyNotFound(f"No active contract of {template_id.qualified_name} "
                                          f"with the given key")
            return machine.exercise(template_id, choice, contract_id, argument)

        return self._run(machine, command)

    def create_and_exercise(self, template_id: Identifier, argument: Record, choice: str,
                            choice_argument: Any, *, act_as: Iterable[str],
                            ledger: LedgerView | None = None, read_as: Iterable[str] = (),
                            ledger_time: int | None = None,
                            new_contract_id: Callable[[], str] | None = None,
                            max_calls: int | None = None) -> Transaction:
        machine = self._machine(act_as, ledger, ledger_time, new_contract_id, read_as, max_calls)

        def command() -> Any:
            contract_id = machine.create(template_id, argument)
            return machine.exercise(template_id, choice, contract_id, choice_argument)

        return self._run(machine, command)
