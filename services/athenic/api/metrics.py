"""``GET /metrics``: Prometheus text exposition, documented as what it is.

Litestar's stock ``PrometheusController`` declares ``application/json`` in the OpenAPI
document while it answers ``text/plain``; schemathesis (tests/drills) caught the mismatch.
"""

from __future__ import annotations

from litestar import Controller, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

# Litestar appends the charset of text media types itself
MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")


class MetricsController(Controller):
    path = "/metrics"
    tags = ["operations"]

    @get(media_type=MEDIA_TYPE, summary="Prometheus metrics (text exposition format)",
         sync_to_thread=False)
    def metrics(self) -> Response[bytes]:
        return Response(generate_latest(REGISTRY), media_type=MEDIA_TYPE)
