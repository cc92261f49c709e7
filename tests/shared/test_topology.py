"""Provisioning is idempotent and adopts an existing topology with other settings."""

from __future__ import annotations

import nats
import pytest
from nats.js.api import KeyValueConfig

from athenic.shared import names
from athenic.shared.settings import NatsSettings, SettingsError, load
from athenic.shared.topology import ensure_topology

pytestmark = pytest.mark.integration


async def test_second_start_reuses_and_updates(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        first = load(NatsSettings, {"NATS_URL": nats_url})
        await ensure_topology(js, first)
        await ensure_topology(js, first)  # idempotent
        changed = load(NatsSettings, {"NATS_URL": nats_url, "ATHENIC_RESPONSE_TTL_SECONDS": "60",
                                      "ATHENIC_ACK_WAIT_SECONDS": "45"})
        buckets = await ensure_topology(js, changed)
        status = await buckets[names.RESPONSES_BUCKET].status()
        assert status.ttl == 60
        consumer = await js.consumer_info(names.REQUEST_STREAM, names.ORCHESTRATOR_CONSUMER)
        assert consumer.config.ack_wait == 45
        stream = await js.stream_info(names.REQUEST_STREAM)
        assert stream.config.retention == "workqueue"
    finally:
        await nc.close()


def test_bad_setting_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="NATS_REPLICAS"):
        load(NatsSettings, {"NATS_REPLICAS": "two"})
    with pytest.raises(SettingsError, match="ATHENIC_MAX_DELIVER"):
        load(NatsSettings, {"ATHENIC_MAX_DELIVER": "0"})


async def test_a_conflict_nats_cannot_update_is_reported_clearly(nats_url: str) -> None:
    from nats.js.api import RetentionPolicy, StreamConfig

    from athenic.shared.topology import TopologyError

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        # someone else's stream under our name, with a retention NATS cannot change
        await js.add_stream(StreamConfig(name=names.REQUEST_STREAM, subjects=[names.REQUEST_SUBJECTS],
                                         retention=RetentionPolicy.LIMITS))
        with pytest.raises(TopologyError, match=names.REQUEST_STREAM):
            await ensure_topology(js, load(NatsSettings, {"NATS_URL": nats_url}))
    finally:
        await nc.close()


async def test_the_files_object_store_is_created_and_follows_the_turn_retention(nats_url: str) -> None:
    from athenic.shared.topology import ensure_object_stores

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        first = load(NatsSettings, {"NATS_URL": nats_url})
        stores = await ensure_object_stores(js, first)
        await ensure_object_stores(js, first)  # idempotent
        await stores[names.FILES_BUCKET].put("c1/a.txt", b"kept")
        changed = load(NatsSettings, {"NATS_URL": nats_url, "ATHENIC_TURN_MAX_AGE_SECONDS": "3600"})
        stores = await ensure_object_stores(js, changed)
        status = await stores[names.FILES_BUCKET].status()
        assert status.ttl == 3600
        assert status.replicas == 1
        assert (await stores[names.FILES_BUCKET].get("c1/a.txt")).data == b"kept"  # adopted, not recreated
    finally:
        await nc.close()


async def test_a_listed_bucket_made_without_direct_gets_is_moved_to_them(nats_url: str) -> None:
    """A file index made by an older version (reads only through the leader) answers direct gets
    once provisioned again on a single server: its listings take the cheap question."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.create_key_value(KeyValueConfig(bucket=names.FILE_INDEX_BUCKET, history=1))
        await ensure_topology(js, load(NatsSettings, {"NATS_URL": nats_url}))
        assert (await js.stream_info(names.kv_stream(names.FILE_INDEX_BUCKET))).config.allow_direct
    finally:
        await nc.close()
