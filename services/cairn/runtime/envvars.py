"""Reading one setting from the environment: the parsers every service's settings share.

Unset or empty means the default; anything else must parse, or starting fails with a ValueError
that names the variable and the value it got.
"""

from __future__ import annotations

from collections.abc import Mapping

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def count(env: Mapping[str, str], name: str, default: int) -> int:
    """A non-negative integer (a limit where 0 means none, a database number)."""
    value = integer(env, name, default)
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = integer(env, name, default)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def ratio(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be a number between 0 and 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1, got {raw!r}")
    return value


def choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, case-insensitive; unset or empty is the first."""
    raw = (env.get(name) or "").strip().lower() or choices[0]
    if raw not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw
