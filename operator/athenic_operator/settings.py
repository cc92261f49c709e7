"""The operator's own settings (the broker's come from ``NatsSettings``), loaded once at start."""

from __future__ import annotations

from typing import Annotated

import msgspec

from athenic.shared.settings import EnvSettings, PositiveFloat


class OperatorSettings(EnvSettings, frozen=True, rename=str.upper):
    # Comma-separated namespaces to watch; empty watches the whole cluster.
    athenic_operator_namespaces: str = ""
    # How often each quota's status.used is refreshed (and its policy re-checked).
    athenic_operator_usage_interval_seconds: PositiveFloat = 15.0
    # Liveness probe: GET http://<pod>:<port>/healthz; 0 turns it off.
    athenic_operator_liveness_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    # Peering: replicas sharing the (Cluster)KopfPeering object of this name pause while a
    # higher-priority one is alive, so only one acts. A random priority unless set.
    athenic_operator_peering: str = "athenic-operator"
    athenic_operator_priority: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # Run without peering (one machine, or a single replica without the peering CRD).
    athenic_operator_standalone: bool = False
    # A plain API URL (e.g. `kubectl proxy`); unset: in-cluster service account or kubeconfig.
    athenic_operator_kube_api_url: str | None = None

    @property
    def namespaces(self) -> list[str]:
        return [ns.strip() for ns in self.athenic_operator_namespaces.split(",") if ns.strip()]

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

