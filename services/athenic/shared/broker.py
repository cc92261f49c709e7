"""One NATS connection per service, kept alive across broker outages.

``Broker.start`` returns at once; a background task connects (retrying with back-off) and
provisions the topology. Until then ``ready`` is false and callers answer "unavailable"
rather than wait: the api must answer 503 within its deadline, and a liveness probe must
never depend on the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from athenic.shared.logging import get_logger
from athenic.shared.settings import NatsSettings
from athenic.shared.timeouts import within
from athenic.shared.topology import TopologyError, ensure_object_stores, ensure_topology

log = get_logger(__name__)


def connect_options(settings: NatsSettings, name: str) -> dict[str, Any]:
    """The keyword arguments of ``nats.connect`` for a service named ``name``: the servers,
    the credentials (``NatsSettings.login``: a user and password, from a file too, or a creds
    file) and reconnecting for ever."""
    options: dict[str, Any] = {
        "servers": settings.servers,
        "name": name,
        "connect_timeout": 2,
        "reconnect_time_wait": 0.5,
        "max_reconnect_attempts": -1,
    }
    options.update(settings.login())
    return options


class BrokerUnavailable(RuntimeError):
    """The broker is not connected (or the topology is not provisioned yet)."""


class Broker:
    def __init__(self, settings: NatsSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._buckets: dict[str, KeyValue] = {}
        self._object_stores: dict[str, ObjectStore] = {}
        self._provisioned = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # called after each reconnect (the subscriptions are back): what was missed meanwhile is re-read
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []

    @property
    def ready(self) -> bool:
        return self._provisioned.is_set() and self._nc is not None and self._nc.is_connected

    @property
    def nc(self) -> Client:
        if self._nc is None or not self._provisioned.is_set():
            raise BrokerUnavailable("not connected to NATS yet")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None or not self._provisioned.is_set():
            raise BrokerUnavailable("not connected to NATS yet")
        return self._js

    def bucket(self, name: str) -> KeyValue:
        if not self._provisioned.is_set():
            raise BrokerUnavailable("not connected to NATS yet")
        return self._buckets[name]

    def object_store(self, name: str) -> ObjectStore:
        if not self._provisioned.is_set():
            raise BrokerUnavailable("not connected to NATS yet")
        return self._object_stores[name]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name=f"{self.name}-nats-connect")

    async def wait_ready(self, timeout: float | None = None) -> None:
        await within(self._provisioned.wait(), timeout)

    async def _connect_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                nc = await nats.connect(**self._connect_options())
                break
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                log.warning("nats connect failed; retrying", servers=self.settings.servers,
                            error=str(exc) or type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._nc = nc
        self._js = nc.jetstream(timeout=5.0)
        delay = 0.1
        while True:
            try:
                self._buckets = await ensure_topology(self._js, self.settings)
                self._object_stores = await ensure_object_stores(self._js, self.settings)
                break
            except TopologyError:
                log.exception("nats topology conflicts; fix it or remove the conflicting object")
                raise
            except (TimeoutError, nats.errors.Error) as exc:
                # e.g. JetStream not ready yet, or no leader during a cluster election
                log.warning("nats provisioning failed; retrying", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._provisioned.set()
        log.info("nats ready", servers=self.settings.servers, replicas=self.settings.nats_replicas)

    def _connect_options(self) -> dict[str, Any]:
        async def on_disconnect() -> None:
            log.warning("nats disconnected")

        async def on_reconnect() -> None:
            log.info("nats reconnected")
            for callback in list(self.on_reconnect):
                await callback()

        async def on_error(exc: Exception) -> None:
            log.warning("nats error", error=str(exc) or type(exc).__name__)

        return {
            **connect_options(self.settings, self.name),
            "ping_interval": 10,
            "max_outstanding_pings": 2,
            "disconnected_cb": on_disconnect,
            "reconnected_cb": on_reconnect,
            "error_cb": on_error,
        }

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._nc is not None and not self._nc.is_closed:
            try:
                await within(self._nc.drain(), 10)
            except (TimeoutError, nats.errors.Error, OSError):
                await self._nc.close()
