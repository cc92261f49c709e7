"""Posting rate limits: a token bucket per user (per client IP without auth), in this process.

Per replica on purpose: the accepted-message path makes one broker round trip (the publish),
and a limit shared through NATS would add a KV read-modify-write to every POST (about a third
of the throughput, see DESIGN.md). With N api replicas behind a load balancer a user can post
up to N times the configured rate; docs/auth.md says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from athenic.api.errors import RateLimited

# Idle buckets are forgotten when there are more than this many (a refilled bucket holds no state).
SWEEP_ABOVE = 10_000


class RateLimiter:
    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = per_minute > 0
        self.rate = per_minute / 60.0  # tokens per second
        self.capacity = float(burst or per_minute)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def admit(self, key: str) -> None:
        """Take one token for ``key`` or raise 429 with the seconds until the next one."""
        if not self.enabled:
            return
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise RateLimited(
                f"too many messages: the limit is {round(self.rate * 60)} a minute "
                f"(bursts of {int(self.capacity)}); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > SWEEP_ABOVE:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        full = [key for key, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.capacity]
        for key in full:
            del self._buckets[key]
