"""Which conversations the api's open WebSockets and SSE streams follow, for the notifier.

While a push session is open its key ``<clientId>.<session>`` in ``PRESENCE_BUCKET`` holds
the following user and is rewritten every third of the bucket's TTL; closing deletes it, and
a replica that dies leaves keys that expire within the TTL. The notifier sends no push for a
conversation its owner is following (see notifier/fanout.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import nats.errors
from nats.js.kv import KeyValue

from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import get_logger
from athenic.shared.messages import encode
from athenic.shared.timeouts import within

log = get_logger(__name__)
WRITE_TIMEOUT_SECONDS = 2.0


class Following:
    """One open push session's presence: written at once, refreshed until ``stop``."""

    def __init__(self, bucket: KeyValue, client_id: str, user: str | None, ttl: float) -> None:
        self.kv = bucket
        self.key = names.presence_key(client_id, uuid.uuid4().hex)
        self.value = encode({"user": user})
        self.period = ttl / 3
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Following:
        await self._write()
        self._task = asyncio.create_task(self._refresh(), name=f"presence-{self.key}")
        return self

    async def _write(self) -> None:
        try:
            await within(self.kv.put(self.key, self.value), WRITE_TIMEOUT_SECONDS)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            # a push may reach a phone while the app is open: noisy, never lost
            log.warning("could not record the open push stream", key=self.key, error=str(exc) or type(exc).__name__)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            await self._write()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
            await within(self.kv.delete(self.key), WRITE_TIMEOUT_SECONDS)


async def follow(broker: Broker, client_id: str, user: str | None) -> Following:
    ttl = float(broker.settings.athenic_presence_ttl_seconds)
    return await Following(broker.bucket(names.PRESENCE_BUCKET), client_id, user, ttl).start()
