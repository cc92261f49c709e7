"""From "a turn is finished" to the deliveries it needs: a push per device, a call per webhook.

Each delivery is published as its own work item (``DELIVERY_SUBJECT_PREFIX``) with a
``Nats-Msg-Id`` made of the request and the target, so an event handled twice (a notifier
that died before its ack) fans out once; the event is acked only after every item is stored.
Pushes are skipped while the conversation's owner has a WebSocket or SSE stream open on it
(api/presence.py); webhooks are for the platform's systems and always go.
"""

from __future__ import annotations

import hashlib

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from athenic.notifier.webhook_targets import WebhookTargets
from athenic.shared import kv, names
from athenic.shared.devices import DeviceRegistry
from athenic.shared.logging import get_logger
from athenic.shared.messages import Delivery, TurnFinished, encode

log = get_logger(__name__)


async def following(js: JetStreamContext, presence: KeyValue, event: TurnFinished) -> bool:
    """Whether the conversation's owner has a push stream open on it right now."""
    streams = await kv.live_values(js, presence, names.PRESENCE_BUCKET, f"{event.client_id}.*")
    return any(msgspec.json.decode(value).get("user") == event.owner for value in streams.values())


class Fanout:
    def __init__(self, js: JetStreamContext, devices: DeviceRegistry, presence: KeyValue,
                 platforms: set[str], webhooks: WebhookTargets) -> None:
        self.js = js
        self.devices = devices
        self.presence = presence
        self.platforms = platforms  # the push services configured (fcm, apns)
        self.webhooks = webhooks

    async def deliveries(self, event: TurnFinished) -> list[Delivery]:
        found = [Delivery(kind="webhook", event=event, webhook_url=url) for url in self.webhooks.urls(event.tenant)]
        if await following(self.js, self.presence, event):
            log.info("owner is following the conversation: no push", client_id=event.client_id,
                     request_id=event.request_id)
            return found
        for key, device in await self.devices.of_user(event.owner):
            if device.platform not in self.platforms:
                log.warning("a device of an unconfigured push service is skipped", platform=device.platform)
                continue
            found.append(Delivery(kind=device.platform, event=event, device_key=key, device_token=device.token))
        return found

    async def handle(self, event: TurnFinished) -> int:
        """Store the event's deliveries (idempotently); how many."""
        items = await self.deliveries(event)
        for item in items:
            target = item.device_key or hashlib.sha256((item.webhook_url or "").encode()).hexdigest()[:32]
            await self.js.publish(names.delivery_subject(item.kind), encode(item), timeout=5.0, headers={
                names.HDR_MSG_ID: f"{event.request_id}:{item.kind}:{target}",
                names.HDR_REQUEST_ID: event.request_id,
            })
        log.info("turn finished: deliveries queued", request_id=event.request_id, status=event.status,
                 deliveries=len(items))
        return len(items)
