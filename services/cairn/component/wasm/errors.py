"""The one exception the WASM metadata extractor raises for bad input.

The message is what the Component API returns to the client in a 400 body, so it starts with
"Parsing error: " (the bytes are not a well-formed component) or "Analysis error: " (the bytes
are well-formed but their exports cannot be analysed), like Golem's own service.
"""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal["Parsing", "Analysis"]


class InvalidComponent(ValueError):
    """The uploaded bytes are not a component whose metadata we can extract."""

    def __init__(self, kind: ErrorKind, reason: str, offset: int | None = None) -> None:
        self.kind: ErrorKind = kind
        self.reason = reason
        self.offset = offset
        where = f" (at offset 0x{offset:x})" if offset is not None else ""
        super().__init__(f"{kind} error: {reason}{where}")

    @property
    def message(self) -> str:
        """The client-facing message, e.g. "Parsing error: unexpected end of input (at ...)"."""
        return str(self)


def parsing_error(reason: str, offset: int | None = None) -> InvalidComponent:
    """A structural (binary format) error."""
    return InvalidComponent("Parsing", reason, offset)


def analysis_error(reason: str, offset: int | None = None) -> InvalidComponent:
    """A semantic error: indices, sorts or types that do not fit together."""
    return InvalidComponent("Analysis", reason, offset)
