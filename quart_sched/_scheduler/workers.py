"""The executor's thread pool: runs plain-function jobs and hands them back to the loop in
batches (one loop wake-up per batch, not a future and a callback per run)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import weakref
from typing import Any

logger = logging.getLogger("quart_sched")


class Call:
    """A call run in a pool thread for a coroutine that awaits its result (the task path)."""

    __slots__ = ("call", "cancelled", "error", "future", "result")

    def __init__(self, call: Any, future: asyncio.Future[Any]) -> None:
        self.call = call
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False

    def run(self) -> None:
        if self.cancelled:
            return
        try:
            self.result = self.call()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        future, error = self.future, self.error
        self.error = None
        if future.done():
            return
        if self.cancelled:
            future.cancel()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(self.result)


class Workers:
    """The executor's threads (``max_workers`` of them, started as needed).

    A thread runs what it is given and hands it back to the loop: the first thread to
    find the hand-back list empty schedules one callback on the loop, which takes every
    run that came back meanwhile. A burst thus costs the loop one wake-up per batch of
    runs instead of a future and a callback per run, as ``run_in_executor`` does.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_workers: int, prefix: str) -> None:
        self.loop = loop
        self.max_workers = max_workers
        self.prefix = prefix
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._done: list[Any] = []
        self._lock = threading.Lock()
        self._initializer: Any = None
        self._initargs: tuple[Any, ...] = ()
        self._shutdown = False

    def configure(self, pool_kwargs: dict[str, Any]) -> None:
        """Take ``ThreadPoolExecutor``'s ``initializer`` and ``initargs`` (``pool_kwargs``,
        checked by the executor): each thread calls it once, before its first run."""
        self._initializer = pool_kwargs.get("initializer")
        self._initargs = tuple(pool_kwargs.get("initargs", ()))

    def submit(self, item: Any) -> None:
        if self._shutdown:
            raise RuntimeError("cannot run jobs after the pool has shut down")
        self._queue.put(item)
        # Read without the lock: at worst one thread more than needed, never more than
        # max_workers; a run never waits for a thread while fewer are running.
        if len(self._threads) < self.max_workers and self._idle < self._queue.qsize():
            thread = threading.Thread(
                target=self._work, name=f"{self.prefix}_{len(self._threads)}"
            )
            self._threads.append(thread)
            _live_pools.add(self)
            thread.start()

    def run(self, call: Any) -> asyncio.Future[Any]:
        """Run ``call`` in a thread; the future (of this loop) gets its result."""
        future = self.loop.create_future()
        self.submit(Call(call, future))
        return future

    def _work(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except Exception:
                logger.exception("The job thread pool's initializer failed")
        get, lock = self._queue.get, self._lock
        while True:
            with lock:
                self._idle += 1
            item = get()
            with lock:
                self._idle -= 1
            if item is None:
                self._queue.put(None)  # for the next thread
                return
            item.run()
            self._hand_back(item)
            del item

    def _hand_back(self, item: Any) -> None:
        with self._lock:
            self._done.append(item)
            first = len(self._done) == 1
        if first:
            # A closed loop: no one is left to report to.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for item in done:
            try:
                item.finish()
            except Exception:
                logger.exception("Reporting a run failed")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more runs; with ``cancel_futures``, drop those not started yet."""
        self._shutdown = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item.cancelled = True
                    self._hand_back(item)
        self._queue.put(None)
        _live_pools.discard(self)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()


#: Pools whose threads must be told to stop when the interpreter exits (as
#: concurrent.futures does for its own): a running job is still waited for.
_live_pools: weakref.WeakSet[Workers] = weakref.WeakSet()


def _stop_pools_at_exit() -> None:
    for pool in list(_live_pools):
        pool.shutdown(wait=False)


threading._register_atexit(_stop_pools_at_exit)  # type: ignore[attr-defined]
