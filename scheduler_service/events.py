"""What the engine announces, for metrics and alerts to listen to (blinker signals, as Flask's own).

Senders are the Flask app. Receivers must be quick and must not raise: they run
on the scheduler's threads (a slow one would delay runs; hand work to a queue).
"""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A run started. kwargs: run (ClaimedRun), started_at (datetime)
run_started = _signals.signal("run-started")
#: A run's outcome was recorded (also for runs finished as `worker lost`). kwargs: run (FinishedRun)
run_finished = _signals.signal("run-finished")
#: A slot was logged as skipped. kwargs: skip (SkippedSlot)
slot_skipped = _signals.signal("slot-skipped")
#: A tick ended. kwargs: report (TickReport), duration_seconds (float)
tick_finished = _signals.signal("tick-finished")
