"""``maxExecutionsPerMinute``: one counter per tenant and UTC minute in NATS KV.

The key is ``rate.<tenant>.<epoch_minute>`` (``athenic.shared.quota_keys``). Taking a unit
reads the counter and writes ``count + 1`` only if nobody wrote since the read
(compare-and-set on the key's revision), so replicas never both take the last unit; a lost
race reads again. Counters carry a per-message TTL and vanish a few minutes after their
minute. Replicas name the minute by their own clocks (kept in sync by NTP in a cluster).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import NamedTuple

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from athenic.orchestrator.errors import RetryableError
from athenic.shared import names
from athenic.shared.kv import write_if_last
from athenic.shared.quota_keys import encode_counter, epoch_minute, parse_counter, rate_key

COUNTER_TTL_SECONDS = 180
MAX_ATTEMPTS = 50


class Reading(NamedTuple):
    minute: int
    used: int
    revision: int


class RateCounter:
    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = kv

    async def read(self, tenant: str) -> Reading:
        """The tenant's counter for the current minute (what ``take`` compares and sets against)."""
        minute = epoch_minute(time.time())
        try:
            entry = await self.kv.get(rate_key(tenant, minute))
            return Reading(minute, parse_counter(entry.value), entry.revision or 0)
        except KeyNotFoundError as exc:  # absent, expired, or deleted (then write after the marker)
            return Reading(minute, 0, (exc.entry.revision or 0) if exc.entry is not None else 0)

    async def take(self, tenant: str, limit: int, known: Reading | None = None) -> float | None:
        """Count one execution in the current minute: None when counted, else the seconds
        until the next minute (the tenant has used ``limit`` this minute). ``known``: a reading
        taken a moment ago (used while its minute lasts; a write since makes the set fail and
        the counter is read again)."""
        for _ in range(MAX_ATTEMPTS):
            now = time.time()
            reading = known if known is not None and known.minute == epoch_minute(now) else await self.read(tenant)
            known = None
            if reading.used >= limit:
                return (reading.minute + 1) * 60 - now
            try:
                await write_if_last(self.js, names.LEASES_BUCKET, rate_key(tenant, reading.minute),
                                    encode_counter(reading.used + 1), reading.revision, COUNTER_TTL_SECONDS)
                return None
            except KeyWrongLastSequenceError:
                await asyncio.sleep(random.uniform(0, 0.005))  # noqa: S311 - jitter, not secrecy
        raise RetryableError(f"the per-minute execution counter of tenant {tenant!r} is too contended")
