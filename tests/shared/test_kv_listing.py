"""Listing the keys of a KV bucket that match a pattern (``kv.live_values``), against a real
nats-server: what was written just before is listed, what was deleted, purged or expired is not,
and a listing leaves nothing on the server (a KV watch would leave its consumer for minutes).
The conversation's files are listed this way (``FileStore.list``), so are a conversation's open
push streams and a user's devices. The policies and leases are still read with a watch
(``read_bucket``, for their revisions), whose consumer must not outlive it by minutes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from athenic.shared import kv, names
from athenic.shared.files import FileStore
from athenic.shared.quotas import read_bucket
from athenic.shared.settings import NatsSettings, load
from athenic.shared.topology import bucket_configs, ensure_object_stores, ensure_topology

pytestmark = pytest.mark.integration

BUCKET = names.FILE_INDEX_BUCKET


@pytest.fixture
async def broker(nats_url: str) -> AsyncIterator[tuple[JetStreamContext, dict[str, KeyValue]]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        yield js, await ensure_topology(js, load(NatsSettings, {"NATS_URL": nats_url}))
    finally:
        await nc.close()


async def consumers(js: JetStreamContext, bucket: str) -> int:
    return (await js.stream_info(names.kv_stream(bucket))).state.consumer_count


async def test_a_key_written_just_before_is_listed_every_time_and_nothing_stays_on_the_server(
        broker: tuple[JetStreamContext, dict[str, KeyValue]]) -> None:
    js, buckets = broker
    index = buckets[BUCKET]
    for round_ in range(300):
        await index.put(f"c{round_}.k", b"v")
        assert await kv.live_values(js, index, BUCKET, f"c{round_}.*") == {f"c{round_}.k": b"v"}, round_
    assert await consumers(js, BUCKET) == 0


async def test_deleted_purged_and_other_keys_are_left_out_and_many_keys_are_all_read(
        broker: tuple[JetStreamContext, dict[str, KeyValue]]) -> None:
    js, buckets = broker
    index = buckets[BUCKET]
    many = {f"a.{n}": str(n).encode() for n in range(kv.READS_AT_ONCE * 2 + 5)}
    await asyncio.gather(*(index.put(key, value) for key, value in many.items()))
    await index.put("a.deleted", b"x")
    await index.delete("a.deleted")
    await index.put("a.purged", b"x")
    await index.purge("a.purged")
    await index.put("ab.other", b"x")
    await index.put("b.1", b"x")
    assert await kv.live_values(js, index, BUCKET, "a.*") == many
    assert await kv.live_values(js, index, BUCKET, "none.*") == {}


async def test_a_conversations_files_are_listed_right_after_each_upload(
        nats_url: str, broker: tuple[JetStreamContext, dict[str, KeyValue]]) -> None:
    js, buckets = broker
    stores = await ensure_object_stores(js, load(NatsSettings, {"NATS_URL": nats_url}))
    files = FileStore(stores[names.FILES_BUCKET], buckets[BUCKET], js)
    assert await files.list("conversation") == []
    for count in range(1, 41):
        await files.put("conversation", f"data-{count:02}.csv", b"a,b\n", "text/csv")
        listed = await files.list("conversation")
        assert [item.name for item in listed] == [f"data-{n:02}.csv" for n in range(1, count + 1)]
    await files.put("another", "mine.txt", b"x", "text/plain")
    assert [item.name for item in await files.list("another")] == ["mine.txt"]
    assert await consumers(js, BUCKET) == 0


async def test_reading_the_policies_leaves_no_consumer_for_long(
        broker: tuple[JetStreamContext, dict[str, KeyValue]]) -> None:
    js, buckets = broker
    policies = buckets[names.POLICIES_BUCKET]
    await policies.put("tenant.acme", b"{}")
    for _ in range(5):
        assert set(await read_bucket(policies)) == {"tenant.acme"}
    async with asyncio.timeout(30):  # each watch's consumer is gone within seconds (not minutes)
        while await consumers(js, names.POLICIES_BUCKET):
            await asyncio.sleep(0.2)


async def test_a_bucket_without_direct_gets_is_listed_all_the_same(
        nats_url: str, broker: tuple[JetStreamContext, dict[str, KeyValue]]) -> None:
    """A listed bucket made without direct gets (by an older version, or on a cluster, where a
    follower could answer one from behind) is asked through its stream: nothing is missed."""
    js, _ = broker
    bucket = "athenic_listing_leader_only"
    index = await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
    assert not (await js.stream_info(names.kv_stream(bucket))).config.allow_direct
    for round_ in range(3):
        assert await kv.live_values(js, index, bucket, f"c{round_}.*") == {}
        await index.put(f"c{round_}.k", b"v")
        assert await kv.live_values(js, index, bucket, f"c{round_}.*") == {f"c{round_}.k": b"v"}


def test_listed_buckets_answer_direct_gets_only_on_a_single_server() -> None:
    listed = {names.FILE_INDEX_BUCKET, names.DEVICES_BUCKET, names.PRESENCE_BUCKET}
    single = bucket_configs(load(NatsSettings, {"NATS_URL": "nats://x:4222"}))
    cluster = bucket_configs(load(NatsSettings, {"NATS_URL": "nats://x:4222", "NATS_REPLICAS": "3"}))
    assert {name for name, config in single.items() if config.direct} == listed
    assert not any(config.direct for config in cluster.values())


async def test_the_listed_buckets_allow_direct_gets_on_the_test_server(
        broker: tuple[JetStreamContext, dict[str, KeyValue]]) -> None:
    js, _ = broker
    for bucket in (names.FILE_INDEX_BUCKET, names.DEVICES_BUCKET, names.PRESENCE_BUCKET):
        assert (await js.stream_info(names.kv_stream(bucket))).config.allow_direct, bucket
    assert not (await js.stream_info(names.kv_stream(names.RESPONSES_BUCKET))).config.allow_direct


async def test_a_bucket_that_allows_direct_gets_later_is_asked_directly_again(
        broker: tuple[JetStreamContext, dict[str, KeyValue]], monkeypatch: pytest.MonkeyPatch) -> None:
    """"No responders" to a direct get (a bucket made without them, or a server away for a
    moment) sends listings through the stream's info for a while, not for the process's life."""
    js, _ = broker
    bucket = "athenic_listing_later_direct"
    index = await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
    monkeypatch.setattr(kv, "DIRECT_RETRY_SECONDS", 0.2)
    asked_info = 0
    stream_info = js.stream_info

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal asked_info
        asked_info += 1
        return await stream_info(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(js, "stream_info", counted)
    assert await kv.live_values(js, index, bucket, "c.*") == {}
    assert asked_info == 1, "without direct gets the stream is asked"
    config = (await stream_info(names.kv_stream(bucket))).config
    config.allow_direct = True
    await js.update_stream(config)
    assert await kv.live_values(js, index, bucket, "c.*") == {}
    assert asked_info == 2, "within the retry period the stream is still asked"
    await asyncio.sleep(0.3)
    assert await kv.live_values(js, index, bucket, "c.*") == {}
    assert asked_info == 2, "then one direct get answers an empty listing"
    await index.put("c.k", b"v")
    assert await kv.live_values(js, index, bucket, "c.*") == {"c.k": b"v"}
