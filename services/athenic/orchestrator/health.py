"""The orchestrator's only inbound HTTP: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import uvicorn
from litestar import Litestar, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from athenic.shared.broker import Broker


def health_app(broker: Broker, alive: Callable[[], bool]) -> Litestar:
    @get("/healthz", sync_to_thread=False)
    def healthz() -> Response[dict[str, str]]:
        if alive():
            return Response({"status": "alive"})
        return Response({"status": "stalled"}, status_code=503)

    @get("/readyz", sync_to_thread=False)
    def readyz() -> Response[dict[str, str]]:
        if broker.ready:
            return Response({"status": "ready"})
        return Response({"status": "not ready", "broker": "disconnected"}, status_code=503)

    @get("/metrics", sync_to_thread=False, media_type=CONTENT_TYPE_LATEST)
    def metrics() -> bytes:
        return generate_latest()

    return Litestar(route_handlers=[healthz, readyz, metrics], openapi_config=None, logging_config=None)


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside our event loop; the orchestrator's main owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_health(app: Litestar, host: str, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = _EmbeddedServer(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                            lifespan="off"))
    task = asyncio.create_task(server.serve(), name="health-server")
    return server, task
