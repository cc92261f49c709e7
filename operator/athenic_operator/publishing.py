"""Keep the policies bucket in step with the verdicts, one tenant at a time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import kopf
import nats.errors

from athenic.shared.quotas import Resolution, publish_policy, read_bucket, reconcile_bucket, withdraw_policy
from athenic_operator.state import OperatorState

log = logging.getLogger(__name__)


async def sync_tenants(
    state: OperatorState, verdicts: Callable[[], Resolution], tenants: Iterable[str | None],
) -> Resolution:
    """Publish each tenant's winning policy, or withdraw its key when it has none left.

    The verdicts are computed under the operator's write lock, from the index as it is
    then: handlers and timers run concurrently, and a decision taken from an older view
    must not land after a newer one (a timer holding a stale body would resurrect a key).
    A broker failure is temporary: kopf retries the handler (the status is not written
    until the policy is, so ``Ready`` never claims what the orchestrators cannot see).
    """
    try:
        async with state.write_lock:
            resolution = verdicts()
            for tenant in {t for t in tenants if t}:
                winner = resolution.winners.get(tenant)
                if winner is not None and winner.policy is not None:
                    await publish_policy(state.policies, winner.policy)
                else:
                    await withdraw_policy(state.policies, tenant)
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise kopf.TemporaryError(f"cannot reach NATS to publish the policy: {exc!r}", delay=2) from exc
    return resolution


async def sweep(state: OperatorState, verdicts: Callable[[], Resolution], every: float) -> Resolution:
    """At most once per ``every`` seconds, reconcile the whole bucket to the verdicts.

    Per-tenant writes cannot see every orphan: a key the start-up resync wrote for a tenant
    that a quota left before its handler ran, a key written by hand. The timers call this;
    kopf runs them only on the acting replica, after the index is complete.
    """
    try:
        async with state.write_lock:
            resolution = verdicts()
            if time.monotonic() >= state.next_sweep:
                state.next_sweep = time.monotonic() + every
                snapshot = await read_bucket(state.policies)
                report = await reconcile_bucket(state.policies, resolution.policies, snapshot)
                if report.written or report.removed:
                    log.info(f"policies bucket swept: written={report.written} removed={report.removed}")
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise kopf.TemporaryError(f"cannot reach NATS to sweep the policies: {exc!r}", delay=2) from exc
    return resolution
