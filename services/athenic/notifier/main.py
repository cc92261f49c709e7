"""`athenic-notifier`: consume finished turns and deliveries until SIGTERM, then drain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

from athenic.health_server import bind_health_socket, health_then_broker
from athenic.notifier.consumer import consume
from athenic.notifier.deliver import Deliverer
from athenic.notifier.fanout import Fanout
from athenic.notifier.senders import make_senders
from athenic.notifier.settings import NotifierSettings
from athenic.notifier.webhook_targets import WebhookTargets, load_targets
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.devices import DeviceRegistry
from athenic.shared.logging import get_logger
from athenic.shared.settings import NatsSettings, load
from athenic.shared.startup import run_until_signalled, settle_heap, start

log = get_logger(__name__)
# a consume loop that has not come round for this long is stuck: the liveness probe restarts the pod
STALLED_AFTER_SECONDS = 120.0


async def serve(settings: NotifierSettings, nats_settings: NatsSettings, stop: asyncio.Event,
                targets: WebhookTargets) -> None:
    senders = make_senders(settings, targets)
    sock = bind_health_socket(settings.athenic_health_host, settings.athenic_notifier_health_port,
                              "ATHENIC_NOTIFIER_HEALTH_PORT")
    log.info("health server listening", port=sock.getsockname()[1], senders=sorted(senders))
    async with AsyncExitStack() as stack:
        stack.callback(sock.close)
        for sender in senders.values():
            stack.push_async_callback(sender.aclose)
        broker = Broker(nats_settings, name="athenic-notifier")
        stack.push_async_callback(broker.close)
        await broker.start()
        loop = asyncio.get_running_loop()
        beats = {names.NOTIFIER_EVENTS_CONSUMER: loop.time(), names.NOTIFIER_DELIVERIES_CONSUMER: loop.time()}

        def alive() -> bool:  # both loops come round at least every fetch timeout unless stuck
            return all(loop.time() - at < STALLED_AFTER_SECONDS for at in beats.values())

        if not await health_then_broker(stack, broker, alive, sock, stop):
            return
        devices = DeviceRegistry(broker.bucket(names.DEVICES_BUCKET), broker.js)
        fanout = Fanout(broker.js, devices, broker.bucket(names.PRESENCE_BUCKET),
                        {kind for kind in senders if kind != "webhook"}, targets)
        deliverer = Deliverer(settings, senders, devices, fanout)
        concurrency = settings.athenic_notify_concurrency
        log.info("notifier consuming", concurrency=concurrency)
        settle_heap()

        def beat(durable: str) -> Callable[[], None]:
            return lambda: beats.__setitem__(durable, loop.time())

        await asyncio.gather(*(
            consume(broker.js, names.NOTIFY_STREAM, durable, handle, stop, concurrency, beat=beat(durable))
            for durable, handle in ((names.NOTIFIER_EVENTS_CONSUMER, deliverer.on_event),
                                    (names.NOTIFIER_DELIVERIES_CONSUMER, deliverer.on_delivery))
        ))


def main() -> None:
    def settings() -> tuple[NotifierSettings, NatsSettings, WebhookTargets]:
        notifier = load(NotifierSettings).check()
        return notifier, load(NatsSettings), load_targets(notifier)

    notifier_settings, nats_settings, targets = start("athenic-notifier", "notifier", settings)

    async def run(stop: asyncio.Event) -> None:
        await serve(notifier_settings, nats_settings, stop, targets)
        log.info("notifier stopped")

    run_until_signalled("athenic-notifier", run)


if __name__ == "__main__":
    main()
