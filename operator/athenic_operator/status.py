"""The ``status`` the operator writes on a SandboxQuota, and the event that tells of a new verdict."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import kopf
import msgspec

from athenic.shared.policy import SandboxPolicy
from athenic.shared.quotas import Standing
from athenic_operator.resource import READY

ACTIVE = "Active"
INVALID = "Invalid"


def phase_of(standing: Standing) -> str:
    return ACTIVE if standing.active else INVALID


def announce(body: kopf.Body, standing: Standing) -> None:
    """The Kubernetes event of a verdict: Normal when the quota governs its tenant, Warning when not."""
    if standing.active:
        kopf.info(body, reason=standing.reason, message=standing.message)
    else:
        kopf.warn(body, reason=standing.reason, message=standing.message)


def hard_of(policy: SandboxPolicy) -> dict[str, Any]:
    """The limits in force; an unset one is ``None`` so a merge patch removes an old value."""
    limits: dict[str, Any] = msgspec.to_builtins(policy)
    limits.pop("tenant", None)
    return limits


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items() if v is not None and k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(standing: Standing, generation: int | None, previous: Mapping[str, Any]) -> dict[str, Any]:
    status = "True" if standing.active else "False"
    before = next((c for c in previous.get("conditions") or [] if c.get("type") == READY), None)
    changed = before is None or before.get("status") != status
    condition: dict[str, Any] = {
        "type": READY,
        "status": status,
        "reason": standing.reason,
        "message": standing.message,
        "lastTransitionTime": _now() if changed or before is None else before.get("lastTransitionTime", _now()),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def build_status(
    *,
    standing: Standing,
    policy: SandboxPolicy | None,
    generation: int | None,
    previous: Mapping[str, Any],
    used: Mapping[str, int] | None,
) -> dict[str, Any]:
    """The whole status; ``None`` values remove a field (merge-patch semantics)."""
    return {
        "phase": phase_of(standing),
        "conditions": [ready_condition(standing, generation, previous)],
        "observedGeneration": generation,
        "hard": hard_of(policy) if standing.active and policy is not None else None,
        "used": dict(used) if used is not None else previous.get("used") if standing.active else None,
    }


def differs(new: Mapping[str, Any], previous: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` would change what a reader of the status sees."""
    return any(_clean(value) != _clean(previous.get(key)) for key, value in new.items())
