from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.kv import KeyValue

from athenic.shared import names
from athenic.shared.settings import NatsSettings, load
from athenic.shared.topology import ensure_topology


@pytest.fixture
async def history_kv(nats_url: str) -> AsyncIterator[KeyValue]:
    """The real history bucket, provisioned the way every service does at start."""
    nc = await nats.connect(nats_url)
    try:
        buckets = await ensure_topology(nc.jetstream(), load(NatsSettings, {"NATS_URL": nats_url}))
        yield buckets[names.HISTORY_BUCKET]
    finally:
        await nc.close()
