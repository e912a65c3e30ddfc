from datetime import datetime, timedelta, timezone

import pytest

from scheduler_service.engine.retry import RetryPolicy

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)


def test_default_backoff_doubles_from_one_minute():
    policy = RetryPolicy()
    assert [policy.backoff_seconds(n) for n in range(1, 5)] == [60, 120, 240, 480]


def test_backoff_is_capped_and_survives_huge_retry_numbers():
    policy = RetryPolicy(max_retries=10**6, delay_seconds=60, max_delay_seconds=300)
    assert policy.backoff_seconds(4) == 300
    assert policy.backoff_seconds(10**9) == 300


def test_delay_larger_than_cap_is_cut_to_cap():
    assert RetryPolicy(delay_seconds=7, max_delay_seconds=5).backoff_seconds(1) == 5


def test_after_failure_until_retries_are_used_up():
    policy = RetryPolicy(max_retries=2, delay_seconds=1, max_delay_seconds=60)
    assert policy.after_failure(1, NOW) == NOW + timedelta(seconds=1)
    assert policy.after_failure(2, NOW) == NOW + timedelta(seconds=2)
    assert policy.after_failure(3, NOW) is None


def test_no_retries_means_none():
    assert RetryPolicy(max_retries=0).after_failure(1, NOW) is None


def test_retry_numbers_start_at_one():
    with pytest.raises(ValueError):
        RetryPolicy().backoff_seconds(0)
