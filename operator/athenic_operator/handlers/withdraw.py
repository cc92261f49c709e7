"""Delete: withdraw the tenant's policy (or hand the tenant to its next quota)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from athenic.shared.names import WILDCARD_TENANT
from athenic.shared.quotas import Quota, quota_of
from athenic_operator.publishing import sync_tenants
from athenic_operator.quota_index import resolve_with
from athenic_operator.state import state_of


async def withdraw(
    *,
    body: kopf.Body,
    memo: Any,
    quotas: kopf.Index[str, Quota],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    state = state_of(memo)
    quota = quota_of(body)
    resolution = await sync_tenants(state, lambda: resolve_with(quotas, quota, without=True), [quota.tenant])
    if quota.tenant is None:
        return
    successor = resolution.winners.get(quota.tenant)
    if successor is not None:
        message = f"tenant {quota.tenant!r} is now governed by SandboxQuota {successor.ref}"
    elif quota.tenant == WILDCARD_TENANT:
        message = "default policy withdrawn; tenants without their own quota get the built-in defaults"
    else:
        message = f"policy of tenant {quota.tenant!r} withdrawn; the default quota applies to it"
    kopf.info(body, reason="Withdrawn", message=message)
    logger.info(message)
