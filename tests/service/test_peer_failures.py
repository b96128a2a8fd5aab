"""Service-to-service calls against a fake auth service that fails, hangs or answers UNAVAILABLE.

The fake upstream is served by pytest-grpc (a sync `grpc.server` on a real socket); the clients
under test are the real ones (`CallerResolver`, `UsageLedger`, `AuthAccountDirectory`) on their
real channels (`cairn.runtime.channels`): idempotent calls ride through a restart, a call that may
have changed state is never repeated, and whatever still fails is a 503 / UNAVAILABLE.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent import futures
from typing import Any

import grpc
import pytest

from cairn.auth.v1 import auth_service_pb2 as pb
from cairn.auth.v1 import auth_service_pb2_grpc as pb_grpc
from cairn.component.access import UsageLedger
from cairn.project.accounts import AuthAccountDirectory
from cairn.runtime.callers import CallerResolver
from cairn.runtime.errors import Unavailable
from cairn.runtime.principal import Principal
from cairn.stack.launcher import free_port

SECRET = "internal-secret"
CALLER = Principal("root", "t", ("Admin",))
UNAVAILABLE_MESSAGE = "The auth service is unavailable; try again shortly"
grpc_max_workers = 4  # pytest-grpc: a hanging call must not block the others


class FakeAuth(pb_grpc.AuthServiceServicer):
    """Answers like the auth service, after `failures` UNAVAILABLE answers, or never (`hang`)."""

    def __init__(self) -> None:
        self.failures = 0
        self.hang = threading.Event()
        self.calls: Counter[str] = Counter()

    def _answer(self, method: str, context: Any, reply: Any) -> Any:
        self.calls[method] += 1
        if self.failures > 0:
            self.failures -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        if self.hang.is_set():
            time.sleep(7)
        return reply

    def Authenticate(self, request: Any, context: Any) -> Any:
        return self._answer("Authenticate", context, pb.AuthenticateResponse(
            principal=pb.Principal(account_id="alice", token_id="t1")))

    def LookupAccount(self, request: Any, context: Any) -> Any:
        return self._answer("LookupAccount", context,
                            pb.LookupAccountResponse(account_id=request.account_id))

    def RecordComponentUsage(self, request: Any, context: Any) -> Any:
        return self._answer("RecordComponentUsage", context, pb.RecordComponentUsageResponse())


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Any:
    return pb_grpc.add_AuthServiceServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer() -> FakeAuth:
    return FakeAuth()


@pytest.fixture(scope="module")
def grpc_stub_cls() -> Any:
    return pb_grpc.AuthServiceStub


@pytest.fixture
def fake(grpc_server: Any, grpc_servicer: FakeAuth) -> FakeAuth:
    grpc_servicer.failures = 0
    grpc_servicer.hang.clear()
    grpc_servicer.calls.clear()
    return grpc_servicer


class Context:
    """What CallerResolver reads of a ServicerContext."""

    def __init__(self, bearer: str) -> None:
        self._metadata = (("authorization", f"Bearer {bearer}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


async def test_an_idempotent_call_rides_through_a_restarting_peer(
    fake: FakeAuth, grpc_addr: str
) -> None:
    fake.failures = 2
    caller = await CallerResolver(SECRET, grpc_addr).resolve(Context("secret"))  # type: ignore[arg-type]
    assert caller.account_id == "alice"
    assert fake.calls["Authenticate"] == 3


async def test_a_peer_that_stays_unavailable_is_a_503(fake: FakeAuth, grpc_addr: str) -> None:
    fake.failures = 100
    with pytest.raises(Unavailable) as failed:
        await AuthAccountDirectory(grpc_addr, SECRET).lookup(CALLER, "bob")
    assert failed.value.message == UNAVAILABLE_MESSAGE
    assert failed.value.http_status == 503
    assert fake.calls["LookupAccount"] == 5, "the retry policy's attempts, then no more"


async def test_a_call_that_may_have_changed_state_is_not_repeated(
    fake: FakeAuth, grpc_addr: str
) -> None:
    fake.failures = 1
    with pytest.raises(Unavailable) as failed:
        await UsageLedger(grpc_addr, SECRET).record(CALLER, "bob", storage_bytes=10)
    assert failed.value.message == UNAVAILABLE_MESSAGE
    assert fake.calls["RecordComponentUsage"] == 1


async def test_a_usage_record_waits_for_a_peer_that_is_back_while_its_channel_reconnects() -> None:
    # Seen in test_faults: right after the auth service restarted, an upload's usage record
    # failed at once on the component's channel, still in its reconnect backoff.
    port = free_port()
    ledger = UsageLedger(f"127.0.0.1:{port}", SECRET)
    with pytest.raises(Unavailable):  # nobody there: the channel backs off
        await ledger.record(CALLER, "bob", storage_bytes=10, operation="op-1")
    restarted = FakeAuth()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_AuthServiceServicer_to_server(restarted, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    threading.Timer(0.2, server.start).start()
    try:
        await ledger.record(CALLER, "bob", storage_bytes=10, operation="op-2")
    finally:
        server.stop(None)
    assert restarted.calls["RecordComponentUsage"] == 1, "sent once, when connected"


async def test_a_hanging_peer_is_a_503_after_the_deadline(fake: FakeAuth, grpc_addr: str) -> None:
    fake.hang.set()
    started = time.monotonic()
    with pytest.raises(Unavailable) as failed:
        await UsageLedger(grpc_addr, SECRET).record(CALLER, "bob", storage_bytes=10)
    assert failed.value.message == UNAVAILABLE_MESSAGE
    assert 4 < time.monotonic() - started < 7


async def test_a_peer_that_is_not_there_is_a_503_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable) as failed:
        await CallerResolver(SECRET, f"127.0.0.1:{free_port()}").resolve(Context("s"))  # type: ignore[arg-type]
    assert failed.value.message == UNAVAILABLE_MESSAGE
    assert time.monotonic() - started < 3
