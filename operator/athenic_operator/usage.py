"""What each tenant uses now, read from the leases bucket (see ``athenic.shared.quota_keys``).

Every quota's timer asks for usage; one scan of the bucket serves them all for a while, so
the cost does not grow with the number of quotas.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from nats.js.kv import KeyValue

from athenic.shared.names import WILDCARD_TENANT
from athenic.shared.quota_keys import (
    ALL_LEASES,
    ALL_SLOTS,
    decode_slots,
    epoch_minute,
    lease_admitted,
    lease_reserve,
    tenant_of_lease_key,
    tenant_of_slots_key,
)
from athenic.shared.quotas import read_bucket


@dataclass(frozen=True)
class Usage:
    concurrent: Mapping[str, int] = field(default_factory=dict)
    this_minute: Mapping[str, int] = field(default_factory=dict)

    def of(self, tenant: str, tenants_with_own_quota: Collection[str]) -> dict[str, int]:
        """``status.used`` of a quota; the default quota (``*``) reports the sum over the
        tenants it governs (those without their own quota)."""
        if tenant == WILDCARD_TENANT:
            concurrent = sum(n for t, n in self.concurrent.items() if t not in tenants_with_own_quota)
            minute = sum(n for t, n in self.this_minute.items() if t not in tenants_with_own_quota)
        else:
            concurrent = self.concurrent.get(tenant, 0)
            minute = self.this_minute.get(tenant, 0)
        return {"concurrentExecutions": concurrent, "executionsThisMinute": minute}


async def read_usage(kv: KeyValue, now: float | None = None, timeout: float = 5.0) -> Usage:
    minute = epoch_minute(time.time() if now is None else now)
    leases = await read_bucket(kv, ALL_LEASES, timeout=timeout)
    concurrent: Counter[str] = Counter()
    reserved: Counter[str] = Counter()  # counted in the minute for a replica's next runs, not run yet
    for key, stored in leases.items():
        if (tenant := tenant_of_lease_key(key)) is not None:
            concurrent[tenant] += lease_admitted(stored.value)
            reserved[tenant] += lease_reserve(stored.value, minute)
    slots = await read_bucket(kv, ALL_SLOTS, timeout=timeout)
    this_minute = {
        tenant: started for key, stored in slots.items()
        if (tenant := tenant_of_slots_key(key)) is not None
        and (started := max(decode_slots(stored.value).started_in(minute) - reserved[tenant], 0))
    }
    return Usage({tenant: n for tenant, n in concurrent.items() if n}, this_minute)


class UsageMeter:
    """``read_usage`` cached for ``max_age`` seconds, one scan at a time."""

    def __init__(self, kv: KeyValue, max_age: float) -> None:
        self.kv = kv
        self.max_age = max_age
        self._usage: Usage | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> Usage:
        async with self._lock:
            if self._usage is None or time.monotonic() - self._read_at >= self.max_age:
                self._usage = await read_usage(self.kv)
                self._read_at = time.monotonic()
            return self._usage
