"""The api's assembly: one factory wiring routes, dependencies, errors, metrics and the broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from athenic.api.audit import AUDIT
from athenic.api.auth import Authenticator, provide_identity
from athenic.api.chat import ChatController
from athenic.api.chat_service import ChatService, UserChat
from athenic.api.devices import DeviceController
from athenic.api.errors import ApiError, to_problem
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
from athenic.shared.logging import get_logger
from athenic.shared.settings import FileSettings, NatsSettings, load

log = get_logger(__name__)


def _validation_problem(exc: ValidationException) -> ProblemDetailsException:
    """Litestar's body/parameter validation failures, said plainly."""
    items = [item for item in exc.extra if isinstance(item, dict)] if isinstance(exc.extra, list) else []
    reasons = "; ".join(str(item.get("message")) for item in items) or str(exc.detail)
    if any(item.get("source") == "body" or item.get("key") == "data" for item in items) or not items:
        if "decode" in reasons.lower() or "json" in reasons.lower() or "malformed" in reasons.lower():
            detail = f"the body is not valid JSON ({reasons})"
        else:
            detail = f'the body must be a JSON object {{"message": "<non-empty string>"}} ({reasons})'
    else:
        detail = "; ".join(f"{item.get('key')}: {item.get('message')}" for item in items)
    return ProblemDetailsException(status_code=400, title="Invalid request", detail=detail)


def _http_problem(exc: HTTPException) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=exc.status_code, title=exc.detail, detail=exc.detail, headers=exc.headers
    )


def _unexpected_problem(exc: Exception) -> ProblemDetailsException:
    log.exception("unhandled error", exc_info=exc)
    return ProblemDetailsException(status_code=500, title="Internal error",
                                   detail="an unexpected error occurred; it has been logged")


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

    problem_map: dict[type[Any], Any] = {
        ApiError: to_problem,
        ValidationException: _validation_problem,
        HTTPException: _http_problem,
        Exception: _unexpected_problem,
    }
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
        plugins=[ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=problem_map))],
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
