"""Working off delivery items: send, then ack, back off (``nak`` with a delay) or give up.

The back-off lives in JetStream: a ``nak`` with a delay makes the server hold the item
and hand it to any replica later, so a notifier that restarts (or dies) mid-retry loses
none. An item is given up (``term``) after ATHENIC_NOTIFY_MAX_ATTEMPTS attempts or on a
permanent refusal; a token the push service says is dead removes its device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import msgspec
from nats.aio.msg import Msg
from prometheus_client import Counter

from athenic.notifier.fanout import Fanout
from athenic.notifier.results import Result, Sender
from athenic.notifier.settings import NotifierSettings
from athenic.shared.devices import DeviceRegistry
from athenic.shared.logging import bind_request, get_logger
from athenic.shared.messages import Delivery, delivery_decoder, turn_finished_decoder

log = get_logger(__name__)
T = TypeVar("T")
DELIVERIES = Counter("athenic_notifier_deliveries_total", "Delivery attempts by kind and outcome",
                     ["kind", "outcome"])
EVENTS = Counter("athenic_notifier_events_total", "Finished-turn events handled", ["outcome"])


def backoff(settings: NotifierSettings, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: base, 2*base, 4*base ... at most the max."""
    delay = settings.athenic_notify_retry_base_seconds * 2.0 ** max(attempt - 1, 0)
    return min(delay, settings.athenic_notify_retry_max_seconds)


class Deliverer:
    def __init__(self, settings: NotifierSettings, senders: Mapping[str, Sender], devices: DeviceRegistry,
                 fanout: Fanout) -> None:
        self.settings = settings
        self.senders = senders
        self.devices = devices
        self.fanout = fanout

    async def on_event(self, msg: Msg) -> None:
        attempt = msg.metadata.num_delivered or 1
        event = await _decoded_or_dropped(msg, turn_finished_decoder, "a finished-turn event")
        if event is None:
            return
        with bind_request(request_id=event.request_id):
            try:
                await self.fanout.handle(event)
            except Exception as exc:
                log.warning("could not queue the deliveries; retrying", attempt=attempt,
                            error=str(exc) or type(exc).__name__)
                EVENTS.labels("retried").inc()
                await msg.nak(delay=backoff(self.settings, attempt))
                return
            await msg.ack_sync()
            EVENTS.labels("queued").inc()

    async def on_delivery(self, msg: Msg) -> None:
        delivery = await _decoded_or_dropped(msg, delivery_decoder, "a delivery item")
        if delivery is None:
            return
        with bind_request(request_id=delivery.event.request_id):
            await self._deliver(msg, delivery, msg.metadata.num_delivered or 1)

    async def _deliver(self, msg: Msg, delivery: Delivery, attempt: int) -> None:
        sender = self.senders.get(delivery.kind)
        if sender is None:
            log.warning("no sender is configured for this delivery; dropped", kind=delivery.kind)
            await msg.term()
            return
        try:
            result = await sender.send(delivery)
        except Exception as exc:  # a bug or a surprise of the service's: treated as transient, bounded
            log.exception("delivery raised", kind=delivery.kind)
            result = Result("retry", str(exc) or type(exc).__name__)
        DELIVERIES.labels(delivery.kind, result.outcome).inc()
        where = {"kind": delivery.kind, "client_id": delivery.event.client_id, "attempt": attempt}
        if result.outcome == "sent":
            log.info("notification delivered", **where)
            await msg.ack_sync()
        elif result.outcome == "dead":
            log.info("the push service says the device is gone: removed", reason=result.reason, **where)
            if delivery.device_key is not None:
                await self.devices.remove(delivery.device_key)
            await msg.ack_sync()
        elif result.outcome == "refused":
            log.warning("delivery refused; not retried", reason=result.reason, **where)
            await msg.term()
        elif attempt >= self.settings.athenic_notify_max_attempts:
            log.error("delivery failed on its last attempt; given up", reason=result.reason, **where)
            await msg.term()
        else:
            delay = max(backoff(self.settings, attempt), min(result.retry_after or 0.0,
                                                            self.settings.athenic_notify_retry_max_seconds))
            log.warning("delivery failed; retrying later", reason=result.reason, retry_in=delay, **where)
            await msg.nak(delay=delay)


async def _decoded_or_dropped(msg: Msg, decoder: msgspec.json.Decoder[T], what: str) -> T | None:
    """The message's body, or None when it is not ``what`` (logged and terminated: a redelivery
    could not make it one)."""
    try:
        return decoder.decode(msg.data)
    except msgspec.DecodeError:
        log.error(f"{what} that is not one; dropped", subject=msg.subject)
        await msg.term()
        return None
