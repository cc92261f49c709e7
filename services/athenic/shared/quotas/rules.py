"""What a schema cannot say: one quota per tenant. The policies bucket holds one policy per
tenant, so the rule spans every quota one writer sees (for the operator: the namespaces it
watches): the oldest quota of a tenant governs it, each newer one is Invalid with a message
naming the one in force."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from athenic.shared.policy import SandboxPolicy
from athenic.shared.quotas.schema import REASON_DUPLICATE, REASON_PUBLISHED, REASON_SCHEMA, Quota, QuotaRef


@dataclass(frozen=True)
class Standing:
    """A quota's verdict: in force (``active``) or Invalid, with the why."""

    active: bool
    reason: str
    message: str


@dataclass
class Resolution:
    winners: dict[str, Quota] = field(default_factory=dict)  # tenant -> the quota in force
    standings: dict[QuotaRef, Standing] = field(default_factory=dict)

    @property
    def policies(self) -> list[SandboxPolicy]:
        return [quota.policy for quota in self.winners.values() if quota.policy is not None]


def resolve(quotas: Iterable[Quota]) -> Resolution:
    """Apply the one-quota-per-tenant rule. Quotas being deleted take no part."""
    result = Resolution()
    for quota in sorted((q for q in quotas if not q.deleting), key=lambda q: q.age_key):
        if quota.policy is None or quota.tenant is None:
            result.standings[quota.ref] = Standing(False, REASON_SCHEMA, quota.error or "invalid spec")
            continue
        winner = result.winners.get(quota.tenant)
        if winner is None:
            result.winners[quota.tenant] = quota
            result.standings[quota.ref] = Standing(
                True, REASON_PUBLISHED, f"policy of tenant {quota.tenant!r} published"
            )
        else:
            result.standings[quota.ref] = Standing(
                False, REASON_DUPLICATE,
                f"tenant {quota.tenant!r} is already governed by the older SandboxQuota {winner.ref}; "
                "this one is ignored until that one is deleted",
            )
    return result
