"""Running the blocking file and S3 calls of one blob operation in worker threads.

File I/O and the minio SDK block, so they run off the event loop. When a caller cancels an
operation, the thread running its current call cannot be stopped; cleanup must wait for it before
closing or deleting what that call is using, which is what `BlockingCalls.settle` is for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# A pool of its own, so many concurrent uploads cannot starve the loop's default executor.
_POOL_SIZE = 32
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def blob_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide thread pool that blob stores use unless given their own."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=_POOL_SIZE, thread_name_prefix="cairn-blob"
            )
        return _pool


class BlockingCalls:
    """Runs the blocking calls of one operation in threads, strictly one after another."""

    def __init__(self, executor: concurrent.futures.Executor | None = None) -> None:
        self._executor = executor if executor is not None else blob_executor()
        self._current: concurrent.futures.Future[Any] | None = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` in a thread after the previous call has finished."""
        await self.settle()
        future = self._executor.submit(function, *args)
        self._current = future
        return await asyncio.wrap_future(future)

    async def settle(self) -> None:
        """Wait until the last call has finished, even if its awaiting caller was cancelled."""
        future = self._current
        if future is None or future.done():
            return
        # asyncio.wait neither raises the call's exception nor cancels it when we are cancelled.
        await asyncio.wait([asyncio.wrap_future(future)])
