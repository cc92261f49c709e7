"""A worker's only inbound HTTP: liveness, readiness and Prometheus metrics (the orchestrator's and
the notifier's, served alike).

It sits beside ``shared/`` rather than in it: ``shared/`` holds the contracts every service imports
with the base install alone (the operator's too), and this server needs litestar and uvicorn,
which only the extras of the services that serve it carry (tests/test_packaging.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable, Iterator

import uvicorn
from litestar import Litestar, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from athenic.shared.broker import Broker
from athenic.shared.settings import SettingsError


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
    """A uvicorn server inside our event loop; the service's main owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_health_socket(host: str, port: int, port_setting: str,
                       host_setting: str = "ATHENIC_HEALTH_HOST") -> socket.socket:
    """The health server's listening socket, bound before anything else starts: a port taken by
    another service on this machine is a setting to change, named in one line (uvicorn would
    exit from inside its task with a page of asyncio noise). Port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SettingsError(
                f"bad setting {port_setting}: port {port} is already in use on {host} (another "
                f"service on this machine?); set {port_setting} to a free port, or 0 to pick one"
            ) from None
        raise SettingsError(f"bad setting {host_setting}/{port_setting}: cannot listen on "
                            f"{host}:{port} ({exc.strerror})") from None
    sock.setblocking(False)
    return sock


async def serve_health(app: Litestar, sock: socket.socket) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = _EmbeddedServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="health-server")
    return server, task


async def health_then_broker(stack: contextlib.AsyncExitStack, broker: Broker, alive: Callable[[], bool],
                             sock: socket.socket, stop: asyncio.Event) -> bool:
    """Serve health at once (stopped with ``stack``), then wait for the broker; False when
    ``stop`` came first (the service then ends without starting its work)."""
    server, server_task = await serve_health(health_app(broker, alive), sock)

    async def stop_server() -> None:
        server.should_exit = True
        await server_task

    stack.push_async_callback(stop_server)
    ready = asyncio.create_task(broker.wait_ready())
    await asyncio.wait([ready, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        ready.cancel()
        return False
    return True
