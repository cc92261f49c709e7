"""List the SandboxQuotas the operator watches, through kopf's own authenticated client.

kopf has no public listing call; its fetcher reuses the credentials of the login handler
(and waits for them), so this module is the one place that reaches into kopf's internals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import kopf

from athenic.shared.quotas import GROUP, KIND, PLURAL, VERSION
from athenic_operator.kopf_internals import NamespaceName, fetch_objs

QUOTA_RESOURCE = kopf.Resource(GROUP, VERSION, PLURAL, kind=KIND, namespaced=True)


async def list_quotas(
    settings: kopf.OperatorSettings, namespaces: Sequence[str], logger: logging.Logger
) -> list[dict[str, Any]]:
    """Every SandboxQuota in ``namespaces`` (all namespaces when empty)."""
    found: list[dict[str, Any]] = []
    scopes: list[NamespaceName | None] = [NamespaceName(ns) for ns in namespaces] or [None]
    for namespace in scopes:
        async for items, _ in fetch_objs(
            settings=settings, resource=QUOTA_RESOURCE, namespace=namespace, logger=logger,
        ):
            found.extend(dict(item) for item in items)
    return found
