"""The operator's view of every SandboxQuota it watches (a kopf index), and its verdicts.

kopf fills the index from the initial listing before any handler runs and keeps it current,
so every handler resolves the one-quota-per-tenant rule against all quotas, not only its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from athenic.shared.quotas import Quota, QuotaRef, Resolution, quota_of, resolve


def index_entry(body: Mapping[str, Any]) -> dict[str, Quota]:
    quota = quota_of(body)
    return {quota.tenant or "": quota}


def all_quotas(index: kopf.Index[str, Quota]) -> list[Quota]:
    return [quota for store in index.values() for quota in store]


def indexed(index: kopf.Index[str, Quota], ref: QuotaRef) -> Quota | None:
    return next((quota for quota in all_quotas(index) if quota.ref == ref), None)


def resolve_with(index: kopf.Index[str, Quota], current: Quota, *, without: bool = False) -> Resolution:
    """Resolve every indexed quota, with ``current`` as given (the handler's own body is
    fresher than, or equal to, its indexed copy) or ``without`` it (being deleted)."""
    others: Iterable[Quota] = (q for q in all_quotas(index) if q.ref != current.ref)
    return resolve([*others] if without else [*others, current])
