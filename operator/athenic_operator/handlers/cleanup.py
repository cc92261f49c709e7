"""Stop: cancel background work, close the broker connection."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats.errors

from athenic.shared.timeouts import within
from athenic_operator.state import OperatorState


async def cleanup(*, memo: Any) -> None:
    state: OperatorState | None = getattr(memo, "state", None)
    if state is None:
        return
    for task in list(state.background):
        task.cancel()
    await asyncio.gather(*state.background, return_exceptions=True)
    with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, OSError):
        await within(state.nc.drain(), 5)
