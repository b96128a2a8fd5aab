"""`python -m cairn.stack` (what `make run` runs): the whole stack in the foreground, supervised.

A part that exits (Redis, a service, Envoy) is restarted with backoff; the stack stops on SIGINT or
SIGTERM, or when one part keeps crashing, and then says why (docs/faults.md).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from cairn.stack.launcher import REPO_ROOT, Stack, StackError, say


def main() -> int:
    run_dir = Path(os.environ.get("CAIRN_RUN_DIR") or REPO_ROOT / ".run")
    stop, wake = threading.Event(), threading.Event()

    def stopping(signum: int, _: object) -> None:
        stop.set()
        wake.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stopping)
    signal.signal(signal.SIGCHLD, lambda *_: wake.set())  # a child died: look now
    try:
        stack = Stack.prepare(os.environ, run_dir).start()
    except StackError as err:
        say(str(err))
        return 1
    print(stack.banner(), flush=True)
    why = stack.supervise(stop, wake)
    if why is not None:
        say(f"stopping: {why}")
    stack.stop()
    print("Cairn stopped.", flush=True)
    return 0 if why is None else 1


if __name__ == "__main__":
    sys.exit(main())
