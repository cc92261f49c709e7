"""``within``: a bounded wait that keeps a cancel landing together with the result."""

from __future__ import annotations

import asyncio

import pytest

from athenic.shared.timeouts import within

pytestmark = pytest.mark.unit


async def test_the_result_comes_back_in_time_and_a_late_one_is_a_timeout() -> None:
    assert await within(asyncio.sleep(0, result="done"), 1) == "done"
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await within(never, 0.01)
    assert never.cancelled()  # (what it waited on is cancelled, as with wait_for)


async def test_a_cancel_landing_with_the_result_is_not_lost() -> None:
    # (Python 3.11's asyncio.wait_for returns the result here, and the cancel is gone)
    result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(within(result, 10))
    await asyncio.sleep(0)  # the task now waits on the future
    result.set_result(1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
