"""`make run`'s stack keeps its secrets: Redis needs a password, secret files are owner-only."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import redis as syncredis

from cairn.auth.v1 import auth_service_pb2 as auth_pb
from cairn.auth.v1 import auth_service_pb2_grpc as auth_grpc
from cairn.runtime.callers import as_caller
from cairn.runtime.principal import Principal
from cairn.stack.launcher import redacted_url

from .conftest import RunningStack, child_pids

pytestmark = pytest.mark.e2e


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_redis_refuses_clients_without_the_password(stack: RunningStack) -> None:
    url = urlsplit(stack.redis_url)
    anonymous = syncredis.Redis(host=url.hostname, port=url.port, socket_timeout=5)
    with pytest.raises(syncredis.AuthenticationError):
        anonymous.set("cairn:token-digest:forged", "admin")
    with pytest.raises(syncredis.AuthenticationError):
        syncredis.Redis(host=url.hostname, port=url.port, password="guess").ping()
    assert syncredis.Redis.from_url(stack.redis_url, socket_timeout=5).ping()


def test_secrets_and_redis_data_are_owner_only(stack: RunningStack) -> None:
    run_dir = stack.run_dir
    assert _mode(run_dir) == 0o700
    for name in ("root-token", "internal-secret", "redis-password", "redis.conf"):
        assert _mode(run_dir / name) == 0o600, name
    assert _mode(run_dir / "redis") == 0o700
    written = [p for p in (run_dir / "redis").rglob("*") if p.is_file()]
    assert written, "the AOF exists"
    assert all(_mode(p) & 0o077 == 0 for p in written), [(p, oct(_mode(p))) for p in written]
    # The password reaches Redis through the 0600 config file, never its command line.
    password = (run_dir / "redis-password").read_text().strip()
    children = child_pids(stack.process.pid)
    cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children]
    assert any(b"redis-server" in c for c in cmdlines)
    assert not [c for c in cmdlines if password.encode() in c]


def test_banner_urls_hide_passwords() -> None:
    assert redacted_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redacted_url("rediss://cairn:s3cret@redis:6380/1?ssl_cert_reqs=required") == (
        "rediss://cairn:***@redis:6380/1?ssl_cert_reqs=required"
    )
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_authenticate_on_the_auth_port_needs_the_internal_credential(stack: RunningStack) -> None:
    """No token oracle: a caller reaching the auth port directly learns nothing about a token
    without a service assertion signed with the internal secret."""
    forged = as_caller(Principal("component-service-caller"), "not-the-internal-secret")
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_ports['auth']}") as channel:
        auth = auth_grpc.AuthServiceStub(channel)
        for metadata in ((), forged, (("authorization", f"Bearer {stack.root_token}"),)):
            with pytest.raises(grpc.RpcError) as refused:
                auth.Authenticate(auth_pb.AuthenticateRequest(token_secret=stack.root_token),
                                  metadata=metadata, timeout=30)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
