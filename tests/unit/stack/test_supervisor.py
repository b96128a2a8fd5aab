"""`make run`'s supervisor (cairn.stack.launcher.Stack.supervise) over real child processes."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from cairn.runtime.settings import Settings
from cairn.stack.launcher import Stack


def stack(tmp_path: Path, limit: int = 3) -> Stack:
    env = {"CAIRN_RESTART_LIMIT": str(limit), "CAIRN_RESTART_WINDOW_SECONDS": "60"}
    return Stack(Settings.from_env(env), env, log_dir=tmp_path)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_part_that_keeps_crashing_stops_the_stack_saying_why(tmp_path: Path) -> None:
    supervised = stack(tmp_path, limit=3)
    supervised.start_part("crasher", python("import time; time.sleep(0.2); exit(3)"),
                          lambda: True, "nothing")
    started = time.monotonic()
    try:
        why = supervised.supervise(threading.Event())
    finally:
        supervised.stop()
    # Three exits: restarted after 0.1 s and 0.2 s, then given up.
    assert why is not None
    assert why.startswith("crasher exited 3 times within 60 s (last exit status 3)")
    assert str(tmp_path / "crasher.log") in why
    assert time.monotonic() - started < 10


def test_a_killed_part_is_restarted_and_the_stop_event_ends_supervision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    supervised = stack(tmp_path)
    marker = tmp_path / "starts"
    # Each start appends a line; the part then runs until it is killed.
    code = f"open({str(marker)!r}, 'a').write('x\\n'); import time; time.sleep(60)"
    supervised.start_part("sleeper", python(code), lambda: marker.exists(), "marker")
    stop, wake = threading.Event(), threading.Event()
    verdict: list[str | None] = []
    watcher = threading.Thread(target=lambda: verdict.append(supervised.supervise(stop, wake)))
    watcher.start()
    try:
        (child,) = supervised.children
        assert child.process is not None
        first = child.process.pid
        child.process.kill()
        wake.set()  # what SIGCHLD does in `python -m cairn.stack`
        deadline = time.monotonic() + 10
        while marker.read_text().count("x") < 2:
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(0.05)
        assert child.process is not None and child.process.pid != first
    finally:
        stop.set()
        wake.set()
        watcher.join(10)
        supervised.stop()
    assert verdict == [None]
    err = capsys.readouterr().err
    assert "sleeper exited with status -9; restarting it in 0.1 s" in err
    assert "sleeper restarted" in err
