"""Errors raised by the DAML-LF engine, each with a stable `code` the ledger service maps to
the Ledger API / JSON API error ids (CONTRACT_NOT_FOUND, DUPLICATE_CONTRACT_KEY, ...)."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: a command could not be interpreted. `str(err)` is fit for an API client."""

    code = "DAML_INTERPRETATION_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(EngineError):
    """`error "..."` (the ERROR builtin) was evaluated."""

    code = "INTERPRETATION_USER_ERROR"


class UnhandledException(EngineError):
    """A DAML exception was thrown and not caught."""

    code = "UNHANDLED_EXCEPTION"


class PreconditionFailed(EngineError):
    """A template's `ensure` clause evaluated to False."""

    code = "TEMPLATE_PRECONDITION_VIOLATED"


class AuthorizationError(EngineError):
    code = "DAML_AUTHORIZATION_ERROR"


class ContractNotFound(EngineError):
    code = "CONTRACT_NOT_FOUND"

    def __init__(self, contract_id: str) -> None:
        super().__init__(f"Contract could not be found with id {contract_id}")
        self.contract_id = contract_id


class ContractNotActive(EngineError):
    code = "CONTRACT_NOT_ACTIVE"

    def __init__(self, contract_id: str, template: str) -> None:
        super().__init__(f"Update failed due to fetch of an inactive contract {contract_id} "
                         f"({template}).")
        self.contract_id = contract_id


class ContractKeyNotFound(EngineError):
    code = "CONTRACT_KEY_NOT_FOUND"


class DuplicateContractKey(EngineError):
    code = "DUPLICATE_CONTRACT_KEY"


class WronglyTypedContract(EngineError):
    code = "DAML_INTERPRETER_INVALID_ARGUMENT"


class InvalidArgument(EngineError):
    """The command itself is wrong (unknown template or choice, bad argument shape, ...)."""

    code = "DAML_INTERPRETER_INVALID_ARGUMENT"


class EvaluationLimitExceeded(EngineError):
    """The command needed more function calls than the engine's budget allows."""

    code = "INTERPRETATION_TIME_EXCEEDED"


class InvalidPackage(EngineError):
    """A package body that was decoded lazily turned out to be malformed."""

    code = "DAML_INTERPRETATION_ERROR"


class ArithmeticFailure(Exception):
    """Raised by builtins; the interpreter turns it into a thrown DAML `ArithmeticError`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
