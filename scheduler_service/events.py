"""What the engine announces, for metrics and alerts to listen to (blinker signals, as Flask's own).

Senders are the Flask app. Receivers must be quick and must not raise: they run
on the scheduler's threads (a slow one would delay runs; hand work to a queue).
Run signals carry lists, one send per tick or recorded batch: in a burst of
thousands of runs a send per run cost more than recording the runs did.
"""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Runs started (one tick's claims). kwargs: runs (list[ClaimedRun]), started_at (datetime).
#: Sent during the tick, as soon as the runs are handed to the workers: no database work here.
runs_started = _signals.signal("runs-started")
#: Outcomes recorded (also of runs finished as `worker lost`). kwargs: runs (list[FinishedRun])
runs_finished = _signals.signal("runs-finished")
#: Slots logged as skipped. kwargs: skips (list[SkippedSlot])
#: A tick sends it before it hands over its runs: no database work here either.
slots_skipped = _signals.signal("slots-skipped")
#: A tick ended. kwargs: report (TickReport), duration_seconds (float)
tick_finished = _signals.signal("tick-finished")
