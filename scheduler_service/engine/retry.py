"""Retry backoff: data plus one function (the shape of Airflow's ``next_retry_datetime``)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    delay_seconds: int = 60
    max_delay_seconds: int = 3600

    def backoff_seconds(self, retry_number: int) -> int:
        """Seconds before retry ``retry_number`` (1-based): delay * 2**(n-1), capped.

        Overflow-safe: the exponent stops growing once the cap is reached.
        """
        if retry_number < 1:
            raise ValueError("retry_number starts at 1")
        cap = self.max_delay_seconds
        exponent = min(retry_number - 1, max(cap // max(self.delay_seconds, 1), 1).bit_length())
        return min(self.delay_seconds * 2**exponent, cap)

    def after_failure(self, attempt: int, finished_at: datetime) -> datetime | None:
        """When attempt ``attempt`` (1 = first try) that failed should be retried, or None if never."""
        if attempt > self.max_retries:
            return None
        return finished_at + timedelta(seconds=self.backoff_seconds(attempt))
