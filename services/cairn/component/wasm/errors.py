"""The one exception the WASM metadata extractor raises for bad input.

The message is what the Component API returns to the client in a 400 body, so it starts with
"Parsing error: " (the bytes are not a well-formed component) or "Analysis error: " (the bytes
are well-formed but their exports cannot be analysed), like Golem's own service.
"""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal["Parsing", "Analysis"]


class InvalidComponent(ValueError):
    """The uploaded bytes are not a component whose metadata we can extract.

    `message` is the client-facing text, e.g. "Parsing error: unexpected end of input (at
    offset 0x1a)"; `offset` is the byte offset the problem was found at, when known.
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset

    @property
    def kind(self) -> ErrorKind:
        return "Parsing" if self.message.startswith("Parsing error: ") else "Analysis"


def _with_offset(reason: str, offset: int | None) -> str:
    return reason if offset is None else f"{reason} (at offset 0x{offset:x})"


def parsing_error(reason: str, offset: int | None = None) -> InvalidComponent:
    """A structural (binary format) error."""
    return InvalidComponent("Parsing error: " + _with_offset(reason, offset), offset=offset)


def analysis_error(reason: str, offset: int | None = None) -> InvalidComponent:
    """A semantic error: indices, sorts or types that do not fit together."""
    return InvalidComponent("Analysis error: " + _with_offset(reason, offset), offset=offset)
