"""Waiting on a condition, never a fixed sleep: the machine may be loaded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(check: Callable[[], Awaitable[Any] | Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (the value is returned)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what or check} (last: {last!r})")
