"""The token bucket behind the posting limit, on a clock the test moves (no waiting)."""

from __future__ import annotations

import pytest

from athenic.api.errors import RateLimited
from athenic.api.ratelimit import SWEEP_ABOVE, RateLimiter

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_with_an_honest_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)  # one token every 10 s
    for _ in range(3):
        limiter.admit("user:a")
    with pytest.raises(RateLimited) as refused:
        limiter.admit("user:a")
    assert refused.value.headers == {"Retry-After": "10"}
    clock.now += 4
    with pytest.raises(RateLimited) as refused:
        limiter.admit("user:a")
    assert refused.value.headers == {"Retry-After": "6"}  # refused tries cost nothing
    clock.now += 6
    limiter.admit("user:a")
    limiter.admit("user:b")  # others have their own bucket


def test_an_idle_bucket_refills_only_up_to_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    limiter.admit("ip:1")
    clock.now += 3600
    limiter.admit("ip:1")
    limiter.admit("ip:1")
    with pytest.raises(RateLimited):
        limiter.admit("ip:1")


def test_zero_turns_it_off_and_burst_zero_means_the_rate() -> None:
    off = RateLimiter(per_minute=0, burst=0)
    for _ in range(1000):
        off.admit("user:a")
    limiter = RateLimiter(per_minute=5, burst=0, clock=Clock())
    for _ in range(5):
        limiter.admit("user:a")
    with pytest.raises(RateLimited):
        limiter.admit("user:a")


def test_full_buckets_are_forgotten_so_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=5, clock=clock)
    for i in range(SWEEP_ABOVE):
        limiter.admit(f"ip:{i}")
    clock.now += 60  # all refilled
    limiter.admit("ip:last")
    assert len(limiter._buckets) <= 1
