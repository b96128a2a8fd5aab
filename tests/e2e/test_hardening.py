"""Regression tests through the real stack for each family of hostile input the hardening issue
found: every one is a prompt 4xx in the API's shape and changes nothing in Redis."""

from __future__ import annotations

import io
import json
import random
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as syncredis

from tests.damage import damaged

from .conftest import RunningStack
from .hostile import ALICE, REPLY_BOUND_SECONDS, bearer, redis_digest

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def api(stack: RunningStack, shared_fixtures: Path) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        dar = (shared_fixtures / "daml" / "model-tests-1.15.dar").read_bytes()
        uploaded = client.post("/v1/packages", content=dar, headers={
            **bearer(ALICE), "Content-Type": "application/octet-stream"})
        assert uploaded.status_code == 200, uploaded.text
        yield client


@pytest.fixture(scope="module")
def redis(stack: RunningStack) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(stack.redis_url, socket_timeout=30)
    yield client
    client.close()


def refused(redis: syncredis.Redis, send: Callable[[], httpx.Response]) -> httpx.Response:
    """Send one hostile request: it must be a 4xx within the bound and change nothing."""
    before = redis_digest(redis)
    started = time.monotonic()
    reply = send()
    elapsed = time.monotonic() - started
    assert elapsed < REPLY_BOUND_SECONDS, f"{elapsed:.1f}s"
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])
    assert reply.headers["content-type"].startswith("application/json")
    reply.json()  # a JSON body in the API's shape
    assert redis_digest(redis) == before, "a refused request changed Redis"
    return reply


def wasm(shared_fixtures: Path) -> bytes:
    return (shared_fixtures / "golem" / "wasm" / "flags-service.wasm").read_bytes()


def form(query: str, component: bytes, **parts: Any) -> dict[str, Any]:
    return {"query": (None, query, "application/json"),
            "component": ("c.wasm", component, "application/wasm"), **parts}


# ------------------------------------------------------------------------------ lone surrogates
SURROGATE_BODIES = [
    # (path, token, raw JSON body) -- every body holds "\ud800" escaped in otherwise valid JSON.
    ("/v1/parties/allocate", "ledger", '{"identifierHint":"a\\ud800"}'),
    ("/v1/parties", "ledger", '["Alice\\ud800"]'),
    ("/v1/create", "ledger", '{"templateId":"Iou:Iou\\ud800","payload":{}}'),
    ("/v1/create", "ledger",
     '{"templateId":"Iou:Iou","payload":{"issuer":"Alice","owner":"Alice","currency":"USD",'
     '"amount":"1","observers":[]},"meta":{"commandId":"x\\ud800"}}'),
    ("/v1/fetch", "ledger", '{"contractId":"#1:0\\ud800"}'),
    ("/v1/query", "ledger", '{"templateIds":["Iou:Iou"],"query":{"currency":"\\udfff"}}'),
    ("/v1/project-policies", "root",
     '{"name":"p\\ud800","projectActions":{"actions":["ViewComponent"]}}'),
    ("/v1/projects", "root", '{"name":"p\\ud800","ownerAccountId":"root","description":"d"}'),
    ("/v1/accounts", "root", '{"name":"n\\ud800","email":"a@example.com"}'),
]


@pytest.mark.parametrize(("path", "who", "body"), SURROGATE_BODIES)
def test_lone_surrogates_in_json_are_400(
    redis: syncredis.Redis, stack: RunningStack, api: httpx.Client, path: str, who: str, body: str
) -> None:
    token = ALICE if who == "ledger" else stack.root_token
    reply = refused(redis, lambda: api.post(path, content=body, headers={**bearer(token), **JSON}))
    assert reply.status_code == 400


def test_lone_surrogates_in_multipart_json_and_query_parameters_are_400(
    redis: syncredis.Redis, stack: RunningStack, api: httpx.Client, shared_fixtures: Path
) -> None:
    root = bearer(stack.root_token)
    reply = refused(redis, lambda: api.post("/v1/components", headers=root, files=form(
        '{"componentName":"c\\ud800"}', wasm(shared_fixtures))))
    assert reply.status_code == 400
    assert "lone UTF-16 surrogate" in reply.json()["errors"][0]
    # %ED%A0%80 is U+D800 encoded as UTF-8: not valid UTF-8, so not valid text.
    reply = refused(redis, lambda: api.get("/v1/components?component-name=%ED%A0%80", headers=root))
    assert reply.status_code == 400
    reply = refused(redis, lambda: api.get("/v1/projects?project-name=%FF", headers=root))
    assert reply.status_code == 400


# ------------------------------------------------------------------------------- multipart headers
@pytest.mark.parametrize("name", ["compoñent", "中文", "emoji-😀"])
def test_non_latin1_part_names_and_filenames(
    redis: syncredis.Redis, stack: RunningStack, api: httpx.Client, shared_fixtures: Path, name: str
) -> None:
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"query\"\r\n"
        f"Content-Type: application/json\r\n\r\n{{\"componentName\":\"{name}\"}}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
        f"filename=\"{name}.wasm\"\r\n\r\nnot wasm\r\n--{boundary}--\r\n"
    ).encode()
    headers = {**bearer(stack.root_token),
               "Content-Type": f"multipart/form-data; boundary={boundary}"}
    reply = refused(redis, lambda: api.post("/v1/components", content=body, headers=headers))
    assert reply.json() == {"errors": ["Missing required form field(s): component"]}
    # The same filename on the real component part is fine (Golem ignores it).
    ok = api.post("/v1/components", headers=bearer(stack.root_token), files={
        "query": (None, json.dumps({"componentName": f"named-{name}"}), "application/json"),
        "component": (f"{name}.wasm", wasm(shared_fixtures), "application/wasm"),
    })
    assert ok.status_code == 200, ok.text
    # Invalid UTF-8 in a part name is a 400, not a crash.
    bad = body.replace(f'name="{name}"'.encode(), b'name="\xff\xfe"', 1)
    reply = refused(redis, lambda: api.post("/v1/components", content=bad, headers=headers))
    assert reply.status_code == 400


# ------------------------------------------------------------------- nesting and huge numbers
@pytest.mark.parametrize("path", ["/v1/create", "/v1/query", "/v1/exercise", "/v1/parties",
                                  "/v1/project-policies", "/v1/projects", "/v1/accounts"])
@pytest.mark.parametrize("body", ["[" * 10_000, '{"a":' + "[" * 5_000 + "]" * 5_000 + "}",
                                  '{"templateId":' + "9" * 100_000 + "}", '{"a":1e999999}'])
def test_deep_nesting_and_huge_numbers_are_400(
    redis: syncredis.Redis, stack: RunningStack, api: httpx.Client, path: str, body: str
) -> None:
    token = stack.root_token if path in ("/v1/project-policies", "/v1/projects",
                                         "/v1/accounts") else ALICE
    reply = refused(redis, lambda: api.post(path, content=body, headers={**bearer(token), **JSON}))
    assert reply.status_code == 400


# ------------------------------------------------------------------------- echoed oversized input
def test_oversized_fields_are_quoted_by_a_short_prefix(
    redis: syncredis.Redis, stack: RunningStack, api: httpx.Client
) -> None:
    reply = refused(redis, lambda: api.post(
        "/v1/accounts", json={"name": "x", "email": "e" * 64_000},
        headers=bearer(stack.root_token)))
    assert reply.status_code == 400
    assert len(reply.text) < 200
    assert reply.json() == {"errors": [f"Invalid email: '{'e' * 64}...'"]}


# ------------------------------------------------------------------------------------ corrupt DARs
def test_corrupt_dars_are_400_and_store_nothing(
    redis: syncredis.Redis, stack: RunningStack, api: httpx.Client, shared_fixtures: Path
) -> None:
    rng = random.Random(20261202)
    originals = [(shared_fixtures / "daml" / name).read_bytes()
                 for name in ("test-1.15.dar", "dummy-daml-app-0.0.1-sdk_1_3_0-lf_1_8.dar")]
    headers = {**bearer(ALICE), "Content-Type": "application/octet-stream"}
    for _ in range(12):
        reply = api.post("/v1/packages", content=damaged(rng.choice(originals), rng),
                         headers=headers)
        if reply.status_code == 200:
            continue  # the flip hit a byte nothing reads (e.g. a zip comment or a source file)
        assert reply.status_code == 400, reply.text
        body = reply.json()
        assert body["status"] == 400 and body["errors"][0].startswith(("Invalid DAR", "DALF",
                                                                        "Unsupported", "daml"))
    # A DAR nothing can read changes nothing.
    refused(redis, lambda: api.post("/v1/packages", content=originals[0][:500], headers=headers))


# ------------------------------------------------------------------------------------ initial files
def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def test_zip_entry_names_with_nul_are_refused(
    redis: syncredis.Redis, stack: RunningStack, api: httpx.Client, shared_fixtures: Path
) -> None:
    name = "safe\0/../../etc/x"
    files = _zip({"s" * len(name): b"x"}).replace(b"s" * len(name), name.encode())
    reply = refused(redis, lambda: api.post(
        "/v1/components", headers=bearer(stack.root_token),
        files=form('{"componentName":"nul-entry"}', wasm(shared_fixtures),
                   files=("files.zip", files, "application/zip"))))
    assert reply.status_code == 400
    assert "NUL and control characters are not allowed" in reply.json()["errors"][0]


def test_a_zip_bomb_is_refused_before_it_is_inflated(
    redis: syncredis.Redis, stack: RunningStack, api: httpx.Client, shared_fixtures: Path
) -> None:
    """~120 KB of zip holding 120 MB of zeros: over the per-upload unpacked cap (100 MB)."""
    bomb = _zip({"zeros": bytes(120_000_000)})
    assert len(bomb) < 200_000
    reply = refused(redis, lambda: api.post(
        "/v1/components", headers=bearer(stack.root_token),
        files=form('{"componentName":"bomb"}', wasm(shared_fixtures),
                   files=("files.zip", bomb, "application/zip"))))
    assert reply.status_code == 403
    assert reply.json() == {
        "error": "Initial files size limit exceeded (limit: 100000000 bytes unpacked)"}


# --------------------------------------------------------------- headers gRPC cannot carry
def _raw_get(stack: RunningStack, path: str, token: str, extra: bytes) -> tuple[int, bytes]:
    """A GET with one header httpx would refuse to send, over a plain socket."""
    port = int(stack.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + token.encode() + b"\r\n" + extra + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(("extra", "status"), [
    (b"x-we!rd: 1", 200), (b"x-value: caf\xc3\xa9", 200), (b"grpc-timeout: 1n", 200),
    (b"grpc-encoding: gzip", 200),
    # Not a header name at all: Envoy's HTTP/1 codec refuses the request itself.
    (b"x-caf\xc3\xa9: 1", 400),
])
def test_headers_grpc_cannot_carry_are_dropped_not_500(
    stack: RunningStack, api: httpx.Client, extra: bytes, status: int
) -> None:
    """Envoy forwarded them as gRPC metadata and the service's gRPC runtime failed the call
    (500 "Illegal header key"); a REST client's grpc-timeout made any call a 504."""
    assert _raw_get(stack, "/v1/accounts/root", stack.root_token, extra)[0] == status
    answered, body = _raw_get(stack, "/v1/parties", ALICE, extra)
    assert answered == status
    if status == 200:
        assert json.loads(body)["status"] == 200


# ------------------------------------------------------------------- bodies over the gRPC limit
def test_a_typed_body_over_the_grpc_limit_is_413_in_the_api_shape(
    stack: RunningStack, api: httpx.Client
) -> None:
    """The transcoder streams typed JSON bodies without a size check, so gRPC refuses the message
    itself (it used to answer 429 {"code":8,"message":"SERVER: Received message larger..."})."""
    body = b'{"name":"' + b"x" * (66 << 20) + b'","ownerAccountId":"root","description":"d"}'
    reply = api.post("/v1/projects", content=body,
                     headers={**bearer(stack.root_token), **JSON}, timeout=120)
    assert reply.status_code == 413, reply.text[:300]
    (message,) = reply.json().values()
    assert message.startswith("Request too large: the request is ")


# ------------------------------------------------------------------------- plugin parameters
@pytest.mark.parametrize("parameters", ['{"k":{}}', '{"k":1}', '{"k":[]}', "[]", '"x"'])
def test_plugin_parameters_that_are_not_strings_are_400(
    redis: syncredis.Redis, stack: RunningStack, api: httpx.Client, shared_fixtures: Path,
    parameters: str,
) -> None:
    """Used to be a 500 with a raw {"code":2,"message":"... DecodeError ..."} body."""
    root = bearer(stack.root_token)
    made = api.post("/v1/components", headers=root, files=form(
        json.dumps({"componentName": "plugin-params"}), wasm(shared_fixtures)))
    component = (made.json() if made.status_code == 200 else api.get(
        "/v1/components?component-name=plugin-params", headers=root).json()[0])
    component_id = component["versionedComponentId"]["componentId"]
    body = '{"name":"p","version":"1","priority":1,"parameters":' + parameters + "}"
    for method, path in (
        ("POST", f"/v1/components/{component_id}/latest/plugins/installs"),
        ("PUT", f"/v1/components/{component_id}/versions/latest/plugins/installs/"
                "00000000-0000-0000-0000-000000000000"),
    ):
        reply = refused(redis, lambda m=method, p=path: api.request(
            m, p, content=body, headers={**root, **JSON}))
        assert reply.status_code == 400
        assert "DecodeError" not in reply.text and "code" not in reply.json()
