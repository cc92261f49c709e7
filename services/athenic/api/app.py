"""The api's assembly: one factory wiring routes, dependencies, errors, metrics and the broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin

from athenic.api.audit import AUDIT
from athenic.api.auth import Authenticator, provide_identity
from athenic.api.chat import ChatController
from athenic.api.chat_service import ChatService, UserChat
from athenic.api.devices import DeviceController
from athenic.api.errors import PROBLEM_MAP
from athenic.api.fanout import Feeds
from athenic.api.fast_paths import Route
from athenic.api.file_service import FileService, UserFiles
from athenic.api.files import FilesController
from athenic.api.health import HealthController
from athenic.api.metrics import MetricsController
from athenic.api.push import SocketController, StreamController
from athenic.api.request_metrics import request_metrics
from athenic.api.settings import ApiSettings
from athenic.shared.broker import Broker
from athenic.shared.settings import FileSettings, NatsSettings, load
from athenic.shared.startup import settle_heap


def create_app(settings: ApiSettings, nats_settings: NatsSettings, broker: Broker | None = None,
               file_settings: FileSettings | None = None) -> Litestar:
    broker = broker or Broker(nats_settings, name="athenic-api")
    chat_service = ChatService(broker, settings.check())
    file_service = FileService(chat_service, file_settings or load(FileSettings))
    authenticator = Authenticator(settings)
    authenticator.log_mode()
    feeds = Feeds(broker)
    AUDIT.configure()

    @asynccontextmanager
    async def broker_lifespan(_: Litestar) -> AsyncIterator[None]:
        await broker.start()
        settle_heap()
        try:
            yield
        finally:
            AUDIT.flush()
            await feeds.close()
            await authenticator.close()
            await broker.close()

    async def provide_user_chat(request: Request[Any, Any, Any]) -> UserChat:
        return UserChat(chat_service, await provide_identity(request, authenticator))

    async def provide_user_files(request: Request[Any, Any, Any]) -> UserFiles:
        return UserFiles(file_service, await provide_identity(request, authenticator))

    app = Litestar(
        route_handlers=[HealthController, ChatController, FilesController, SocketController, StreamController,
                        DeviceController, MetricsController],
        dependencies={
            "broker": Provide(lambda: broker, sync_to_thread=False),
            "chat_service": Provide(lambda: chat_service, sync_to_thread=False),
            "api_settings": Provide(lambda: settings, sync_to_thread=False),
            "authenticator": Provide(lambda: authenticator, sync_to_thread=False),
            "feeds": Provide(lambda: feeds, sync_to_thread=False),
            "identity": Provide(provide_identity),
            "chat": Provide(provide_user_chat),
            "files": Provide(provide_user_files),
        },
        plugins=[ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=PROBLEM_MAP))],
        middleware=[request_metrics],
        lifespan=[broker_lifespan],
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,  # structlog (shared.logging) owns the log format
        openapi_config=OpenAPIConfig(
            title="Athenic API",
            version="1.0.0",
            description="Chat messages in, answers out. WebSocket and SSE routes are documented in docs/api.md.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
    )
    app.state.feeds = feeds  # the server ends push streams as its shutdown begins (main.py)
    app.state.fast_paths = Route(chat_service, authenticator, settings.max_body_bytes)
    return app
