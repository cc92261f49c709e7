"""Admission of executions under a tenant's quota.

``Unlimited`` admits everything; the cross-replica enforcement of ``SandboxQuota`` limits
(leases and per-minute counters in NATS KV) implements the same ``slot`` interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from athenic.shared.policy import SandboxPolicy


class Unlimited:
    def slot(self, tenant: str, policy: SandboxPolicy) -> AbstractAsyncContextManager[None]:
        return _admit()


@asynccontextmanager
async def _admit() -> AsyncIterator[None]:
    yield


def make_gate(broker: object) -> Unlimited:
    """The execution gate for this deployment (quota enforcement plugs in here)."""
    return Unlimited()
