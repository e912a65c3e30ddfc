"""How many runs one process may hold claimed (claimed and not yet recorded) at once.

Read by the tick thread before it claims and by the recorder thread after each batch;
``note_recorded`` is the recorder's. Claiming ahead of the workers by as many runs as
they finished in the last CLAIM_AHEAD_SECONDS lets a burst of short runs take a few full
ticks and batches instead of one per worker's worth, while a claimed run still waits
about that long at most for a worker of this process (not hoarded when another process
could start it). Runs that take longer keep the floor of 2 x workers.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

CLAIM_AHEAD_SECONDS = 0.25


class ClaimWindow:
    """At least 2 x ``workers`` (so the workers never wait for a tick), at most ``workers + ceiling_extra``."""

    def __init__(self, workers: int, ceiling_extra: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.workers = workers
        self.floor = 2 * workers
        self.ceiling = workers + ceiling_extra
        self._clock = clock
        self._recorded: collections.deque[tuple[float, int]] = collections.deque()  # (when, how many)
        self._lock = threading.Lock()

    def note_recorded(self, count: int) -> None:
        with self._lock:
            self._recorded.append((self._clock(), count))

    def size(self) -> int:
        """The workers plus what they finished in the last CLAIM_AHEAD_SECONDS, within floor and ceiling."""
        horizon = self._clock() - CLAIM_AHEAD_SECONDS
        with self._lock:
            while self._recorded and self._recorded[0][0] < horizon:
                self._recorded.popleft()
            recent = sum(count for _, count in self._recorded)
        return min(max(self.workers + recent, self.floor), self.ceiling)

    def has_room(self, in_flight: int) -> bool:
        """Whether at least half the window is free: only then does a recorded batch call for a tick.

        In a burst a tick costs a few milliseconds of GIL time before it claims its first run,
        so ticking after every recorded batch would claim little each time. Nothing due waits
        long for it: with less than half free, either the workers are all busy (the floor is
        2 x workers), or the window is that wide because about as many runs finished in the
        last CLAIM_AHEAD_SECONDS, and half of it drains in half that.
        """
        window = self.size()
        return window - in_flight >= window // 2
