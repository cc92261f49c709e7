"""`athenic-api`: run the api alone against NATS_URL (as in a cluster)."""

from __future__ import annotations

import socket

import uvicorn

from athenic.api.app import create_app
from athenic.api.fanout import Feeds
from athenic.api.settings import ApiSettings
from athenic.shared.logging import get_logger
from athenic.shared.settings import FileSettings, NatsSettings, load
from athenic.shared.startup import start


class ApiServer(uvicorn.Server):
    """uvicorn, ending the push streams first when it shuts down (it would wait for SSE until its grace ends)."""

    def __init__(self, config: uvicorn.Config, feeds: Feeds) -> None:
        super().__init__(config)
        self.feeds = feeds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.feeds.end_all()
        await super().shutdown(sockets)


def main() -> None:
    settings, nats_settings, file_settings = start(
        "athenic-api", "api", lambda: (load(ApiSettings).check(), load(NatsSettings), load(FileSettings)))
    get_logger(__name__).info("api starting", host=settings.api_host, port=settings.api_server_port,
                              nats=nats_settings.servers)
    app = create_app(settings, nats_settings, file_settings=file_settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_server_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.athenic_shutdown_grace_seconds),
        # uvicorn pings idle WebSockets so proxies keep them open, and drops dead peers
        ws_ping_interval=settings.athenic_ws_ping_seconds,
        ws_ping_timeout=settings.athenic_ws_ping_seconds,
        # a WebSocket frame is never bigger than the body of a POST (larger: close 1009)
        ws_max_size=settings.max_body_bytes,
    )
    server = ApiServer(config, app.state.feeds)
    server.run()
    if not server.started:  # e.g. the port is taken (uvicorn logged why)
        raise SystemExit(3)

if __name__ == "__main__":
    main()
