"""The E2B stand-in on its own event loop in a thread, beside synchronous process control."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from tests.support.e2b_standin import E2BStandIn

S = TypeVar("S", bound=E2BStandIn)


@contextmanager
def serving(standin: S) -> Iterator[S]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def main() -> None:
        loop.run_until_complete(standin.__aenter__())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(standin.__aexit__(None, None, None))

    thread = threading.Thread(target=main, name="e2b-standin", daemon=True)
    thread.start()
    assert ready.wait(30), "the E2B stand-in did not start"
    try:
        yield standin
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
