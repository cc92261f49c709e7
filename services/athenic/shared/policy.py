"""Sandbox policy per tenant: the ``spec`` of a ``SandboxQuota`` and its KV form.

The operator (or ``athenic dev --quotas``) writes one value per tenant into the policies
bucket; the orchestrators read and watch it. ``tenant: "*"`` is the default for tenants
without their own quota; without any quota, ``BUILTIN_DEFAULT`` applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from athenic.shared.names import TENANT_PATTERN, WILDCARD_TENANT


class SandboxPolicy(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    tenant: Annotated[str, msgspec.Meta(pattern=TENANT_PATTERN)]
    max_concurrent_executions: Annotated[int, msgspec.Meta(ge=1)] = 4
    max_executions_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 60
    max_execution_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30
    memory_mib: Annotated[int, msgspec.Meta(ge=32)] = msgspec.field(default=512, name="memoryMiB")
    allow_internet: bool = False
    e2b_template: str | None = None
    sandbox_idle_seconds: Annotated[int, msgspec.Meta(ge=10)] = 300
    on_exceed: Literal["Queue", "Reject"] = "Queue"


BUILTIN_DEFAULT = SandboxPolicy(tenant=WILDCARD_TENANT)


def policy_key(tenant: str) -> str:
    """The KV key of a tenant's policy (``*`` is not a legal KV key character)."""
    return "default" if tenant == WILDCARD_TENANT else f"tenant.{tenant}"


def tenant_of_key(key: str) -> str:
    return WILDCARD_TENANT if key == "default" else key.removeprefix("tenant.")


policy_decoder = msgspec.json.Decoder(SandboxPolicy)


def policy_from_spec(spec: Mapping[str, Any]) -> SandboxPolicy:
    """The policy of a ``SandboxQuota``'s ``spec`` (camelCase keys; absent fields take the
    defaults, which equal the CRD's). Raises ``msgspec.ValidationError`` on a bad value."""
    return msgspec.convert(dict(spec), SandboxPolicy)


def encode_policy(policy: SandboxPolicy) -> bytes:
    """The KV value of a policy (what ``policy_decoder`` reads)."""
    return msgspec.json.encode(policy)
