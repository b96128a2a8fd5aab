"""`python -m cairn.stack` (what `make run` runs): the whole stack in the foreground."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from cairn.stack.launcher import REPO_ROOT, Stack, StackError


def main() -> int:
    run_dir = Path(os.environ.get("CAIRN_RUN_DIR") or REPO_ROOT / ".run")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack = Stack.prepare(os.environ, run_dir).start()
    except StackError as err:
        print(f"cairn: {err}", file=sys.stderr)
        return 1
    print(stack.banner(), flush=True)
    status = 0
    while not stop.wait(0.5):
        dead = stack.exited()
        if dead is not None:
            code = dead.process.returncode
            print(f"cairn: {dead.name} exited ({code}); stopping", file=sys.stderr)
            status = 1
            break
    stack.stop()
    print("Cairn stopped.", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
