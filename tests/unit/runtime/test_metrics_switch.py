"""CAIRN_METRICS_ENABLED=false: no per-call timings are taken (what the overhead bench compares)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from cairn.blobstore.disk import DiskBlobStore
from cairn.blobstore.metered import MeteredBlobStore, metered
from cairn.runtime import metrics
from cairn.runtime.redis import _measured


@pytest.fixture
def recording_off() -> Iterator[None]:
    metrics.set_recording(False)
    try:
        yield
    finally:
        metrics.set_recording(True)


def _observed(command: str) -> float:
    value = REGISTRY.get_sample_value("cairn_redis_command_seconds_count", {"command": command})
    return value or 0.0


def test_redis_commands_are_timed_only_while_recording(recording_off: None) -> None:
    before = _observed("UNITSWITCH")
    with _measured("unitswitch"):
        pass
    assert _observed("UNITSWITCH") == before
    metrics.set_recording(True)
    with _measured("unitswitch"):
        pass
    assert _observed("UNITSWITCH") == before + 1


def test_blob_stores_are_wrapped_only_while_recording(tmp_path: Path, recording_off: None) -> None:
    store = DiskBlobStore(tmp_path)
    assert metered(store) is store
    metrics.set_recording(True)
    assert isinstance(metered(store), MeteredBlobStore)


def test_a_failed_redis_command_is_timed_and_counted_by_its_error() -> None:
    def errors() -> float:
        value = REGISTRY.get_sample_value("cairn_redis_command_errors_total",
                                          {"command": "UNITFAIL", "error": "ValueError"})
        return value or 0.0

    before_seconds, before_errors = _observed("UNITFAIL"), errors()
    with pytest.raises(ValueError), _measured(b"unitfail"):
        raise ValueError("refused")
    with _measured("unitfail"):  # bytes and text name the same command
        pass
    assert _observed("UNITFAIL") == before_seconds + 2
    assert errors() == before_errors + 1
