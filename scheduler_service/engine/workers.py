"""The engine's pool: a fixed set of worker threads that execute claimed runs in the order given.

Runs on the worker threads it starts (``submit`` is called from the tick thread). Lighter
than a ThreadPoolExecutor, which made a Future (and its lock) per run that nothing waited
on: outcomes go to the recorder's queue instead.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from .records import ClaimedRun

log = logging.getLogger(__name__)


class Workers:
    """A fixed set of threads that execute claimed runs in the order given."""

    _DONE = object()

    def __init__(self, count: int, work: Callable[[ClaimedRun], None], name: str) -> None:
        self._work = work
        self._name = name
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._count = count
        self._threads = [self._new_thread(index) for index in range(count)]
        self._retired: set[int] = set()  # idents of threads stuck in a call, replaced by others

    def _new_thread(self, index: int) -> threading.Thread:
        return threading.Thread(target=self._serve, name=f"{self._name}-{index}", daemon=True)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def replace(self, ident: int) -> None:
        """Start a thread in place of the one with ``ident``, stuck in a call; that one ends when it returns."""
        self._retired.add(ident)
        if self._closed:
            return  # no more work comes: the others take the last queued runs
        thread = self._new_thread(len(self._threads))
        self._threads.append(thread)
        thread.start()

    def submit(self, claimed: ClaimedRun) -> None:
        if self._closed:
            raise RuntimeError("the workers are shut down")
        self._queue.put(claimed)

    def shutdown(self) -> None:
        """Let the workers finish what is queued (stopped runs end at once), then end."""
        self._closed = True
        for _ in range(self._count):
            self._queue.put(self._DONE)

    def _serve(self) -> None:
        while (claimed := self._queue.get()) is not self._DONE:
            try:
                self._work(claimed)
            except BaseException:  # _work records every outcome itself; nothing may end a worker
                log.exception("a worker failed")
            if threading.get_ident() in self._retired:
                # Its replacement serves now; forget the ident, which a new thread may get.
                self._retired.discard(threading.get_ident())
                return
