"""``kv.follow`` says "loaded" only once the values present at the start are applied, also when
nats-py's end-of-initial-values marker comes before them.

nats-py queues that marker at once when its consumer's info says nothing is pending, which the
server may say while the first entries are already on their way; they then follow the marker.
The bucket here is a stand-in for nats-py's ``KeyValue`` replaying exactly that order (the race
cannot be produced on demand against a real server); the real watch is exercised wherever a
service follows a bucket (policies, sandboxes, slots).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from nats.js.kv import KeyValue

from athenic.shared import kv

pytestmark = pytest.mark.unit


@dataclass
class Status:
    values: int


class Watcher:
    def __init__(self, items: list[KeyValue.Entry | None]) -> None:
        self.items = items

    async def __aiter__(self) -> AsyncIterator[KeyValue.Entry | None]:
        for item in self.items:
            await asyncio.sleep(0)
            yield item
        await asyncio.Event().wait()  # a watch stays open

    async def stop(self) -> None:
        return None


class Bucket:
    """What ``follow`` uses of nats-py's ``KeyValue``: ``watch`` and ``status``."""

    def __init__(self, items: list[KeyValue.Entry | None], messages: int) -> None:
        self.items = items
        self.messages = messages

    async def watch(self, keys: str) -> Watcher:
        return Watcher(self.items)

    async def status(self) -> Status:
        return Status(self.messages)


def entry(key: str, revision: int, delta: int) -> KeyValue.Entry:
    return KeyValue.Entry(bucket="policies", key=key, value=b"{}", revision=revision, delta=delta,
                          created=None, operation=None)


async def loaded_after(bucket: Bucket, keys: str = ">") -> list[str]:
    """The keys applied by the time ``loaded`` is set."""
    applied: list[str] = []
    loaded = asyncio.Event()
    follower = asyncio.create_task(kv.follow(bucket, lambda key, _r, _v: applied.append(key),  # type: ignore[arg-type]
                                             what="test", loaded=loaded, keys=keys))
    try:
        async with asyncio.timeout(5):
            await loaded.wait()
        return list(applied)
    finally:
        follower.cancel()


async def test_a_marker_before_the_entries_on_their_way_waits_for_the_last_of_them() -> None:
    early = Bucket([None, entry("tenant.a", 1, 1), entry("tenant.b", 2, 0)], messages=2)
    assert await loaded_after(early) == ["tenant.a", "tenant.b"]


async def test_the_marker_of_an_empty_bucket_and_the_one_after_the_entries_are_believed() -> None:
    assert await loaded_after(Bucket([None], messages=0)) == []
    assert await loaded_after(Bucket([entry("tenant.a", 1, 0), None], messages=1)) == ["tenant.a"]
