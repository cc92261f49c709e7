"""Waiting with a time limit that never loses a cancel.

Python 3.11's ``asyncio.wait_for`` returns the awaited result when it lands together with a
cancel of the waiting task, and the cancel is gone: a task told to stop goes on (a loop waiting
on an event with a timeout runs one more round, a shutdown waits for it). ``asyncio.timeout``
has no such window (3.12's ``wait_for`` is built on it). Every bounded wait of the services
goes through ``within``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``, cancelling it and raising ``TimeoutError`` after ``seconds`` (None: no limit)."""
    async with asyncio.timeout(seconds):
        return await awaitable
