"""Push registration: ``POST /api/devices`` and ``DELETE /api/devices/{token}`` for the calling user.

A device belongs to the user who registered it last (see shared/devices.py); registering
again refreshes its TTL. Another user's device, or an unknown token, is a 404 on delete.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Literal

import msgspec
import nats.errors
from litestar import Controller, Response, delete, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from athenic.api import problems
from athenic.api.errors import BrokerUnavailable, InvalidRequest, NotFound
from athenic.api.identity import Identity
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.broker import BrokerUnavailable as NotConnected
from athenic.shared.devices import DeviceRegistry, InvalidDevice, check_device
from athenic.shared.messages import iso_timestamp


class DeviceIn(msgspec.Struct, frozen=True):
    """``platform``: `fcm` (Firebase Cloud Messaging registration token) or `apns` (APNs device token, hex)."""

    platform: str
    token: str


class DeviceOut(msgspec.Struct, frozen=True, rename="camel"):
    platform: Literal["fcm", "apns"]
    token: str
    registered_at: str
    expires_at: str


BAD_DEVICE = problems.problem("Bad JSON, an unknown `platform`, or a token that platform never issues")
NO_DEVICE = problems.problem("No device with this token is registered for the calling user")


@asynccontextmanager
async def _broker_errors() -> AsyncIterator[None]:
    """A broker that cannot answer is a 503 (retry later), as on the chat routes."""
    try:
        yield
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise BrokerUnavailable("the message broker is unavailable; retry later",
                                headers={"Retry-After": "1"}) from exc


def _registry(broker: Broker) -> DeviceRegistry:
    """The registry, or a 503 at once while the broker is away: a request would wait out its
    timeout, and a write nats-py buffered would land after the 503 was answered."""
    if not broker.ready:
        raise BrokerUnavailable("the message broker is unavailable; retry later", headers={"Retry-After": "1"})
    try:
        return DeviceRegistry(broker.bucket(names.DEVICES_BUCKET), broker.js)
    except NotConnected:
        raise BrokerUnavailable("the message broker is unavailable; retry later",
                                headers={"Retry-After": "1"}) from None


def _expires_at(registered_at: str, ttl: int) -> str:
    moment = datetime.fromisoformat(registered_at.replace("Z", "+00:00")) + timedelta(seconds=ttl)
    return iso_timestamp(moment)


class DeviceController(Controller):
    path = "/api/devices"
    tags = ["devices"]

    @post(
        "/",
        summary="Register a device for push notifications",
        description="The calling user's device gets a notification when a turn of one of their conversations "
        "ends (completed, failed, cancelled) while no WebSocket or SSE stream of theirs follows it. 201 when new, "
        "200 when it was registered already (its expiry starts afresh). A token registered by another user "
        "moves to the caller.",
        status_code=201,
        responses={200: ResponseSpec(data_container=DeviceOut, description="It was registered already"),
                   400: BAD_DEVICE, 401: problems.UNAUTHORIZED, 503: problems.UNAVAILABLE},
    )
    async def register(self, data: JSONBody[DeviceIn], identity: NamedDependency[Identity],
                       broker: NamedDependency[Broker]) -> Response[DeviceOut]:
        try:
            check_device(data.platform, data.token)
        except InvalidDevice as exc:
            raise InvalidRequest(str(exc)) from None
        async with _broker_errors():
            device, new = await _registry(broker).register(identity.user, data.platform, data.token)
        ttl = broker.settings.athenic_device_ttl_seconds
        body = DeviceOut(platform=device.platform, token=device.token, registered_at=device.registered_at,
                         expires_at=_expires_at(device.registered_at, ttl))
        return Response(body, status_code=201 if new else 200)

    @delete(
        "/{token:str}",
        status_code=204,
        summary="Unregister a device",
        description="Stops notifications to this device. 404 when the calling user has no device with this token.",
        responses={401: problems.UNAUTHORIZED, 404: NO_DEVICE, 503: problems.UNAVAILABLE},
    )
    async def unregister(self, token: FromPath[str], identity: NamedDependency[Identity],
                         broker: NamedDependency[Broker]) -> None:
        async with _broker_errors():
            found = await _registry(broker).unregister(identity.user, token)
        if not found:
            raise NotFound("no device with this token is registered for you")
