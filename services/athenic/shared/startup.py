"""How every service's ``main`` starts and runs: its settings loaded first (a bad one ends it at
once naming the variable, exit 2), then logging configured; a worker runs until SIGTERM or SIGINT;
once started, its heap is settled (``settle_heap``)."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from athenic.shared.logging import configure_logging
from athenic.shared.settings import LogSettings, exit_on_bad_settings, load

T = TypeVar("T")


def start(program: str, service: str, load_settings: Callable[[], T]) -> T:
    """The service's settings (``load_settings``), then the log format its ``LOG_*`` settings ask for."""
    with exit_on_bad_settings(program):
        log_settings = load(LogSettings)
        loaded = load_settings()
    configure_logging(log_settings, service=service)
    return loaded


def settle_heap() -> None:
    """Once a service has started: what start-up made (modules, classes, clients, settings: most of
    the heap, and alive for good) is collected once, then left out of every later collection
    (``gc.freeze``). A full collection otherwise walks all of it: measured under load, a 35-47 ms
    stall of the event loop about once in each 50 s bench run of the api and of the orchestrator;
    after this, under 2 ms."""
    gc.collect()
    gc.freeze()


def run_until_signalled(program: str, serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``serve(stop)`` in a new event loop; SIGTERM and SIGINT set ``stop`` (the worker then
    drains). A setting found bad only when used (a health port taken...) ends it as one found at start."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    with exit_on_bad_settings(program):
        asyncio.run(run())
