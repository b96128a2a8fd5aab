"""REST bodies: the JSON a REST client receives, rendered by the service, carried in a HttpBody.

Every REST-mapped RPC's response message has a `google.api.HttpBody rest` field named by the
http rule's `response_body`. Envoy's Lua filter marks transcoded calls with `x-cairn-rest: 1`; for
those the handler fills `rest` with JSON in the documented shape (numbers as numbers, nulls,
bare arrays, tagged unions), for native gRPC calls it fills the typed fields instead.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.api import httpbody_pb2

REST_MARKER = "x-cairn-rest"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def is_rest(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """True when Envoy transcoded this call from REST, so the response must carry JSON."""
    return any(k == REST_MARKER and v == "1" for k, v in context.invocation_metadata() or ())


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as Golem's and DAML's servers write it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def json_body(value: Any) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=JSON_CONTENT_TYPE, data=dumps(value))
