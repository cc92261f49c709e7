"""The effective sandbox policy of each tenant, kept current by watching the policies bucket.

The operator (or ``athenic dev --quotas``) writes the bucket; a change reaches every replica
within the watch's latency, without a restart. Lookup order: the tenant's own policy, the
``*`` default, then ``BUILTIN_DEFAULT``.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from nats.js.kv import KeyValue

from athenic.shared.kv import follow
from athenic.shared.logging import get_logger
from athenic.shared.names import WILDCARD_TENANT
from athenic.shared.policy import (
    BUILTIN_DEFAULT,
    SandboxPolicy,
    policy_decoder,
    tenant_of_key,
)
from athenic.shared.timeouts import within

log = get_logger(__name__)


class PolicyCache:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._policies: dict[str, SandboxPolicy] = {}
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()

    def for_tenant(self, tenant: str) -> SandboxPolicy:
        return self._policies.get(tenant) or self._policies.get(WILDCARD_TENANT) or BUILTIN_DEFAULT

    def all(self) -> list[SandboxPolicy]:
        """Every tenant's own policy and the ``*`` default (what the E2B warm pool sizes from)."""
        return list(self._policies.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="policy-watch")
        await within(self._loaded.wait(), 10)

    async def _watch(self) -> None:
        await follow(self.kv, self._apply, what="policy", loaded=self._loaded)

    def _apply(self, key: str, _revision: int, value: bytes | None) -> None:
        tenant = tenant_of_key(key)
        if value is None:
            self._policies.pop(tenant, None)
            log.info("sandbox policy removed", tenant=tenant)
            return
        try:
            self._policies[tenant] = policy_decoder.decode(value)
        except msgspec.ValidationError as exc:
            log.error("invalid sandbox policy ignored", tenant=tenant, error=str(exc))
            return
        log.info("sandbox policy applied", tenant=tenant)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
