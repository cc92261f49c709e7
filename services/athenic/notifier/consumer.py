"""A durable pull consumer's loop: fetch what there is room for, handle each message in a task.

Every replica binds the same durable consumer, so the server spreads the messages over them.
On stop the loop fetches nothing more and waits for the messages in hand; one it never
acked is redelivered (to another replica) after the consumer's ack wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from athenic.shared.logging import get_logger

log = get_logger(__name__)
FETCH_TIMEOUT_SECONDS = 1.0


async def consume(js: JetStreamContext, stream: str, durable: str, handle: Callable[[Msg], Coroutine[Any, Any, None]],
                  stop: asyncio.Event, concurrency: int, beat: Callable[[], None] = lambda: None) -> None:
    """``beat`` is called on every turn of the loop: the liveness probe's sign of life."""
    sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    tasks: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            beat()
            room = concurrency - len(tasks)
            if room <= 0:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await sub.fetch(room, timeout=FETCH_TIMEOUT_SECONDS)
            except TimeoutError:
                continue
            except nats.errors.Error as exc:
                log.warning("fetch failed; retrying", consumer=durable, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                task = asyncio.create_task(handle(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
