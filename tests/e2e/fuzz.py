"""Hostile-request fuzzing through the real stack: generators, a judge, and the report.

Every REST binding the transcoder serves (read from the descriptor set, so a new path is fuzzed
the day it lands) gets requests mutated by Hypothesis: hostile path segments and query values
(lone surrogates, invalid UTF-8, NUL, huge), hostile JSON bodies (deep nesting, 100-digit and
100,000-digit numbers, surrogate escapes, wrong types, mutated valid bodies), wrong content types,
methods, tokens and headers. Binary inputs (WASM, DAR, initial-files zip) are mutated real files.

`Judge.send` makes one call and records whether it kept the promises of docs/hardening.md: no
5xx, an answer within `REPLY_BOUND_SECONDS`, and for a refused request (4xx) an unchanged Redis
(DEBUG DIGEST before and after). `Report` adds the numbers up for the docs.
"""

from __future__ import annotations

import io
import json
import random
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import redis as syncredis
import requests
from hypothesis import strategies as st

from cairn.stack.envoy_config import RestRule, rest_rules
from cairn.stack.launcher import DESCRIPTOR

from .hostile import ALICE, REPLY_BOUND_SECONDS, redis_digest

LEDGER_PATHS = ("/v1/create", "/v1/exercise", "/v1/fetch", "/v1/query", "/v1/parties",
                "/v1/packages", "/v1/user")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")


# ------------------------------------------------------------------------------- the judge
@dataclass
class Report:
    """What a fuzz run sent and what came back; `failures` must end empty."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    slowest_seconds: float = 0.0
    server_errors: list[str] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)
    state_changes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return self.server_errors + self.slow + self.state_changes

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "slowest_seconds": round(self.slowest_seconds, 3),
            "server_errors": len(self.server_errors),
            "slow_replies": len(self.slow),
            "state_changes_on_rejection": len(self.state_changes),
        }


@dataclass
class Judge:
    client: httpx.Client
    redis: syncredis.Redis
    report: Report

    def send(self, method: str, path: str, *, what: str = "", **kwargs: Any) -> None:
        """One httpx call, checked (see `check`)."""

        def call() -> tuple[int, str]:
            reply = self.client.request(method, path, **kwargs)
            return reply.status_code, reply.text

        self.check(f"{method} {path[:120]} {what}", call)

    def check(self, label: str, call: Callable[[], tuple[int, str]]) -> None:
        """Make one call and record any broken promise; the caller asserts on the report."""
        before = redis_digest(self.redis)
        started = time.monotonic()
        try:
            status, text = call()
        except (httpx.TimeoutException, requests.Timeout):
            self.report.requests += 1
            self.report.slow.append(f"no answer: {label}")
            return
        except (httpx.InvalidURL, httpx.LocalProtocolError):
            return  # the client library would not send it: nothing reached the stack
        elapsed = time.monotonic() - started
        self.report.requests += 1
        self.report.statuses[status] += 1
        self.report.slowest_seconds = max(self.report.slowest_seconds, elapsed)
        label = f"{label} -> {status}: {text[:160]!r}"
        if status >= 500:
            self.report.server_errors.append(label)
        if elapsed > REPLY_BOUND_SECONDS:
            self.report.slow.append(f"{elapsed:.1f}s {label}")
        if 400 <= status < 500 and redis_digest(self.redis) != before:
            self.report.state_changes.append(label)


# ------------------------------------------------------------------------- hostile values
# Code points a careless handler trips on: lone surrogates, NUL, controls, bidi, non-characters.
NASTY_CHARS = st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b", "\u202e", "\uffff", "\ufeff",
                               "é", "中", "\U0001f600", "'", '"', "\\", "/", "%", "{", "\n"])
_NASTY_WORDS = st.one_of(
    st.text(alphabet=st.one_of(st.characters(), NASTY_CHARS), max_size=40),
    st.sampled_from(["", " ", "..", "null", "true", "-1", "0", "1e999", "NaN",
                     "00000000-0000-0000-0000-000000000000", "Iou:Iou", "#1:0"]),
)
# In a URL (whose whole request line must fit Envoy's 60 KiB of headers), and in a body.
URL_TEXT = _NASTY_WORDS | st.integers(min_value=1_000, max_value=8_000).map(lambda n: "x" * n)
NASTY_TEXT = _NASTY_WORDS | st.integers(min_value=1_000, max_value=70_000).map(lambda n: "x" * n)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**40), max_value=10**40), NASTY_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(NASTY_TEXT, children,
                                                                      max_size=4),
    max_leaves=12,
)
# Bodies no JSON library writes: each once crashed or hung a handler somewhere.
RAW_BODIES = st.one_of(
    st.integers(min_value=129, max_value=20_000).map(lambda n: "[" * n),
    st.integers(min_value=129, max_value=5_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(min_value=101, max_value=100_000).map(lambda n: '{"name":' + "9" * n + "}"),
    st.sampled_from(['{"a":1e999999}', '{"a":NaN}', '"\\ud800"', '{"\\udc00":1}', "{oops",
                     '{"name":"a\\u0000b"}', "", "null", "[]", '{"a":"\\ud83d"}']),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


def path_segment(value: str) -> str:
    """A value as the client puts it in a path: percent-encoded from UTF-8, lone surrogates and
    all (which makes invalid UTF-8 on the wire)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def json_text(value: Any) -> str:
    """JSON with non-ASCII escaped, so lone surrogates travel as \\udXXX escapes."""
    return json.dumps(value, ensure_ascii=True)


# ----------------------------------------------------------------------------- the targets
@dataclass(frozen=True)
class Target:
    """One REST binding, and what a well-formed call to it looks like."""

    rule: RestRule

    @property
    def ledger(self) -> bool:
        return self.rule.template.startswith(LEDGER_PATHS)

    def variables(self) -> list[str]:
        parts = self.rule.template.strip("/").split("/")
        return [p.strip("{}").split("=")[0] for p in parts if p.startswith("{")]


def targets() -> list[Target]:
    """Every (method, path template) the transcoder serves."""
    return sorted({Target(rule) for rule in rest_rules(DESCRIPTOR)},
                  key=lambda t: (t.rule.template, t.rule.method))


@dataclass
class World:
    """Things that exist in the stack under fuzz: real ids make calls reach deep code."""

    root_token: str
    ids: dict[str, list[str]] = field(default_factory=dict)
    # valid bodies per path template, mutated by the fuzzer
    bodies: dict[str, Any] = field(default_factory=dict)

    def token_for(self, target: Target) -> str:
        return ALICE if target.ledger else self.root_token


@st.composite
def hostile_requests(draw: Callable[..., Any], world: World, all_targets: list[Target]
                     ) -> tuple[str, str, dict[str, Any], str]:
    """(method, path, httpx keyword arguments, description) of one mutated REST call."""
    target = draw(st.sampled_from(all_targets))
    method = target.rule.method if draw(st.integers(0, 9)) else draw(st.sampled_from(METHODS))
    # Deleting the things the seeded ids name would leave the rest of the run only 404s.
    known = world.ids if method != "DELETE" else {}
    path = "/" + "/".join(
        _segment(draw, known, part) for part in target.rule.template.strip("/").split("/")
    )
    params = draw(st.dictionaries(
        st.sampled_from(["project-id", "component-name", "project-name", "version", "name",
                         "provider", "access-token", "redirect", "template-id", "x"]),
        URL_TEXT, max_size=3,
    ))
    if params:
        path += "?" + "&".join(f"{path_segment(k)}={path_segment(v)}" for k, v in params.items())
    # Mostly the right token, so calls get past authentication into the handlers.
    token = f"Bearer {world.token_for(target)}" if draw(st.integers(0, 4)) else draw(
        st.sampled_from(["", f"Bearer {world.root_token}", f"Bearer {ALICE}", "Bearer x",
                         "Basic Zm9vOmJhcg==", "Bearer " + "e" * 9000]))
    headers = {"Authorization": token} if token else {}
    content_type = draw(st.sampled_from([
        "application/json", "application/json", "application/json", "text/plain",
        "application/octet-stream", "multipart/form-data; boundary=x", "application/grpc",
        "", "application/json; charset=latin-1",
    ]))
    if content_type:
        headers["Content-Type"] = content_type
    if draw(st.integers(0, 9)) == 0:
        name, value = draw(st.sampled_from([
            ("x-we!rd", "1"), ("x-cairn-principal", "forged.mac"), ("x-cairn-rest", "0"),
            ("x-http-status", "200"), ("grpc-timeout", "1n"), ("te", "trailers"),
            ("x-cairn-ledger-claims", "e30.x"),
        ]))
        headers[name] = value
    body = _body(draw, world, target)
    description = f"body={body[:80]!r}" if body else ""
    return method, path, {"content": body.encode("utf-8", "surrogatepass"), "headers": headers}, \
        description


def _segment(draw: Callable[..., Any], ids: dict[str, list[str]], part: str) -> str:
    if not part.startswith("{"):
        return part
    name = part.strip("{}").split("=")[0]
    known = ids.get(name)
    if known and draw(st.integers(0, 2)):
        return draw(st.sampled_from(known))
    return path_segment(draw(URL_TEXT)) or "x"


def _body(draw: Callable[..., Any], world: World, target: Target) -> str:
    choice = draw(st.integers(0, 9))
    seed = world.bodies.get(target.rule.template)
    if choice < 5 and isinstance(seed, dict):
        mutated = dict(seed)
        key = draw(st.sampled_from(sorted(mutated) or ["x"]))
        if draw(st.booleans()):
            mutated[key] = draw(JSON_VALUES)
        else:
            mutated.pop(key, None)
        return json_text(mutated)
    if choice < 7:
        return json_text(draw(JSON_VALUES))
    if choice < 9:
        return str(draw(RAW_BODIES))
    return ""


# ------------------------------------------------------------------------- binary inputs
def files_zip(rng: random.Random) -> bytes:
    """A small valid `files` archive to damage."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("static/index.html", b"<h1>hi</h1>" * rng.randint(1, 50))
        archive.writestr("config/app.json", json.dumps({"n": rng.random()}))
        archive.writestr("data/zeros.bin", bytes(rng.randint(0, 200_000)))
    return buffer.getvalue()


def fixture_inputs(shared_fixtures: Path) -> dict[str, list[bytes]]:
    """The real files the binary fuzzing damages: small WASM components and DARs."""
    wasm = sorted((shared_fixtures / "golem" / "wasm").glob("*.wasm"),
                  key=lambda p: p.stat().st_size)
    dars = sorted((shared_fixtures / "daml").glob("*.dar"), key=lambda p: p.stat().st_size)
    return {
        "wasm": [p.read_bytes() for p in wasm[:6]],
        "dar": [p.read_bytes() for p in dars[:6]],
    }
