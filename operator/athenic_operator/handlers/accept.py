"""Create, update and resume: judge the quota, publish its tenant's policy, write the status."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from athenic.shared.quotas import Quota, quota_of
from athenic_operator.publishing import sync_tenants
from athenic_operator.quota_index import resolve_with
from athenic_operator.state import state_of
from athenic_operator.status import announce, build_status, phase_of


async def accept(
    *,
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    quotas: kopf.Index[str, Quota],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    cause: str,
    old: Mapping[str, Any] | None = None,
) -> None:
    state = state_of(memo)
    quota = quota_of(body)
    # A quota that changed tenant leaves its old one: that tenant's key follows its own winner.
    old_spec = (old or {}).get("spec") or {}
    old_tenant = old_spec.get("tenant") if isinstance(old_spec, Mapping) else None
    resolution = await sync_tenants(state, lambda: resolve_with(quotas, quota), [quota.tenant, old_tenant])
    standing = resolution.standings[quota.ref]

    previous_phase = status.get("phase")
    patch.status.update(build_status(
        standing=standing, policy=quota.policy, generation=meta.get("generation"),
        previous=status, used=None,
    ))
    # One event per accepted or refused change; a restart (resume) is not a change unless
    # the verdict moved meanwhile.
    if cause != "resume" or previous_phase != phase_of(standing):
        announce(body, standing)
    logger.info(f"{cause}: {phase_of(standing)} ({standing.reason}): {standing.message}")
