"""Liveness (never calls the broker) and readiness (the broker is connected)."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from athenic.api import problems
from athenic.api.schemas import Health, Ready
from athenic.shared.broker import Broker


class HealthController(Controller):
    path = "/api"
    tags = ["health"]

    @get("/health", summary="Liveness (no broker call)")
    async def health(self) -> Health:
        return Health(status="healthy", service="api-server")

    @get("/ready", summary="Readiness: the broker is connected and provisioned",
         responses={503: problems.NOT_READY})
    async def ready(self, broker: NamedDependency[Broker]) -> Response[Ready]:
        if broker.ready:
            return Response(Ready(status="ready", broker="connected"))
        return Response(Ready(status="not ready", broker="disconnected"), status_code=503)
