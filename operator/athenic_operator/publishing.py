"""Keep the policies bucket in step with the verdicts, one tenant at a time."""

from __future__ import annotations

from collections.abc import Iterable

import kopf
import nats.errors

from athenic.shared.quotas import Resolution, publish_policy, withdraw_policy
from athenic_operator.state import OperatorState


async def sync_tenants(state: OperatorState, resolution: Resolution, tenants: Iterable[str | None]) -> None:
    """Publish each tenant's winning policy, or withdraw its key when it has none left.

    A broker failure is temporary: kopf retries the handler (the status is not written
    until the policy is, so ``Ready`` never claims what the orchestrators cannot see).
    """
    try:
        for tenant in {t for t in tenants if t}:
            winner = resolution.winners.get(tenant)
            if winner is not None and winner.policy is not None:
                await publish_policy(state.policies, winner.policy)
            else:
                await withdraw_policy(state.policies, tenant)
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise kopf.TemporaryError(f"cannot reach NATS to publish the policy: {exc!r}", delay=2) from exc
