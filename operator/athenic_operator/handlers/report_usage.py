"""Periodically: report usage into ``status.used`` and re-check the quota's standing.

The re-check promotes a duplicate whose older rival was deleted; the sweep it triggers
(at most once per interval for all quotas) repairs the bucket if it drifted (a broker
restored from an old snapshot, a manual edit, an orphaned key).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
import nats.errors

from athenic.shared.names import WILDCARD_TENANT
from athenic.shared.quotas import Quota, quota_of
from athenic_operator.publishing import sweep
from athenic_operator.quota_index import indexed, resolve_with
from athenic_operator.state import state_of
from athenic_operator.status import announce, build_status, differs, phase_of


async def report_usage(
    *,
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    quotas: kopf.Index[str, Quota],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    state = state_of(memo)
    # A timer's body can be older than the index (which kopf updates before any handler):
    # judge the indexed copy, so a stale body never re-publishes what an update withdrew.
    quota = indexed(quotas, quota_of(body).ref)
    if quota is None:
        return
    every = state.settings.athenic_operator_usage_interval_seconds
    resolution = await sweep(state, lambda: resolve_with(quotas, quota), every)
    standing = resolution.standings[quota.ref]

    used: dict[str, int] | None = None
    if standing.active and quota.tenant is not None:
        try:
            usage = await state.usage.current()
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            logger.warning(f"usage not refreshed, NATS unreachable: {exc!r}")
        else:
            own = {tenant for tenant in resolution.winners if tenant != WILDCARD_TENANT}
            used = usage.of(quota.tenant, own)

    fresh = build_status(standing=standing, policy=quota.policy, generation=meta.get("generation"),
                         previous=status, used=used)
    if not differs(fresh, status):
        return
    patch.status.update(fresh)
    if status.get("phase") != phase_of(standing):
        announce(body, standing)
