"""Structured logging: one structlog configuration for every process (JSON lines by default)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import orjson
import structlog

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def _dumps_bytes(value: Any, default: Any = None, **_: Any) -> bytes:
    """One JSON line's bytes: orjson (a line in ~10 µs of CPU instead of ~15 with `json`, two
    lines per cheapest call); what orjson refuses (an int over 64 bits, a lone surrogate) falls
    back to the standard library, so a log call never raises."""
    try:
        return orjson.dumps(value, default=default, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, default=default, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8", "backslashreplace")


def _dumps_text(value: Any, default: Any = None, **_: Any) -> str:
    return _dumps_bytes(value, default).decode("utf-8", "backslashreplace")


def configure_logging(level: str = "info", fmt: str = "json", service: str = "") -> None:
    """Route structlog and stdlib logging (grpc, redis) through one JSON renderer on stderr."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    console = fmt == "console"
    # structlog's own lines go out as bytes (BytesLogger: no str round trip, one write each);
    # stdlib records pass through a formatter, which needs text: same JSON, decoded.
    binary = getattr(sys.stderr, "buffer", None)
    renderer: structlog.types.Processor
    logger_factory: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer()
        logger_factory = structlog.PrintLoggerFactory(sys.stderr)
    elif binary is not None:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps_bytes)
        logger_factory = structlog.BytesLoggerFactory(binary)
    else:  # a stderr without a byte stream (replaced in-process): text lines
        renderer = structlog.processors.JSONRenderer(serializer=_dumps_text)
        logger_factory = structlog.PrintLoggerFactory(sys.stderr)
    stdlib_renderer: structlog.types.Processor = (
        renderer if console else structlog.processors.JSONRenderer(serializer=_dumps_text)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, stdlib_renderer,
        ], foreign_pre_chain=shared)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    if service:
        structlog.contextvars.bind_contextvars(service=service)
