"""Prometheus metrics of the E2B backend (served on the orchestrator's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

POOL_CLAIMS = Counter("athenic_orchestrator_e2b_pool_claims_total",
                      "First runs of new conversations by whether a warm sandbox was claimed", ["outcome"])
SANDBOX_EVENTS = Counter("athenic_orchestrator_e2b_sandbox_events_total",
                         "E2B sandboxes created, attached (resumed or not), paused and killed, by reason",
                         ["event", "reason"])
