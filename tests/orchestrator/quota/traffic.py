"""Requests of a chosen tenant published straight to JetStream (as the api publishes them),
policies published as the operator publishes them, and the final records read back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from athenic.shared import names
from athenic.shared.messages import (
    FINAL_STATUSES,
    ChatRequest,
    Execution,
    ResponseRecord,
    encode,
    iso_timestamp,
    response_record_decoder,
)
from athenic.shared.policy import policy_from_spec
from athenic.shared.quota_keys import lease_admitted, lease_prefix
from athenic.shared.quotas import publish_policy


def slow_code(seconds: float, label: object = "") -> str:
    return f"```python\nimport time\ntime.sleep({seconds})\nprint('done {label}')\n```"


@dataclass
class QuotaTraffic:
    """The test's side of the quota traffic: its own connection to the nats-server the
    orchestrators use, to post requests, set policies and read records and leases."""

    nc: Client
    js: JetStreamContext
    responses: KeyValue
    policies: KeyValue
    leases: KeyValue

    @classmethod
    async def connect(cls, url: str) -> QuotaTraffic:
        nc = await nats.connect(url)
        js = nc.jetstream()
        # the services created the buckets at start (ensure_topology)
        return cls(nc, js, await js.key_value(names.RESPONSES_BUCKET), await js.key_value(names.POLICIES_BUCKET),
                   await js.key_value(names.LEASES_BUCKET))

    async def close(self) -> None:
        await self.nc.close()

    async def set_policy(self, **spec: Any) -> None:
        """Publish a tenant's policy as the operator does (spec fields in camelCase)."""
        await publish_policy(self.policies, policy_from_spec(spec))

    async def post(self, tenant: str, message: str, client_id: str | None = None) -> str:
        """Publish one chat message of ``tenant`` as the api does; returns its clientId."""
        client_id = client_id or f"{tenant}-{uuid.uuid4().hex[:12]}"
        request_id = uuid.uuid4().hex
        request = ChatRequest(request_id=request_id, client_id=client_id, message=message,
                              submitted_at=iso_timestamp(), tenant=tenant)
        await self.js.publish(names.request_subject(client_id), encode(request),
                              headers={names.HDR_MSG_ID: request_id, names.HDR_REQUEST_ID: request_id,
                                       names.HDR_TENANT: tenant})
        return client_id

    async def record(self, client_id: str) -> ResponseRecord | None:
        try:
            entry = await self.responses.get(client_id)
        except KeyNotFoundError:
            return None
        return response_record_decoder.decode(entry.value) if entry.value else None

    async def final(self, client_ids: Iterable[str], timeout: float = 60) -> dict[str, ResponseRecord]:
        """Wait until every record is final (completed, failed or cancelled)."""
        pending = set(client_ids)
        done: dict[str, ResponseRecord] = {}
        deadline = time.monotonic() + timeout
        while pending:
            for client_id in list(pending):
                record = await self.record(client_id)
                if record is not None and record.status in FINAL_STATUSES:
                    done[client_id] = record
                    pending.discard(client_id)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} of {len(done) + len(pending)} messages never got a final "
                                     f"answer, e.g. {sorted(pending)[:3]}")
            await asyncio.sleep(0.1)
        return done

    async def live_leases(self, tenant: str) -> list[str]:
        """The tenant's admitted lease keys alive now (what the operator counts): every subject
        the stream holds for the tenant, less deletion markers and candidates not admitted
        (a lease key whose admission is being decided)."""
        stream = names.kv_stream(names.LEASES_BUCKET)
        pattern = names.kv_subject(names.LEASES_BUCKET, f"{lease_prefix(tenant)}*")
        info = await self.js.stream_info(stream, subjects_filter=pattern)
        keys = []
        for subject in (info.state.subjects or {}):
            key = subject.removeprefix(names.kv_subject(names.LEASES_BUCKET, ""))
            try:
                entry = await self.leases.get(key)  # a deleted (purged) or expired key is not found
            except KeyNotFoundError:
                continue
            if lease_admitted(entry.value):
                keys.append(key)
        return keys

    async def wait_leases(self, tenant: str, count: int, timeout: float = 20) -> float:
        """Wait until the tenant holds exactly ``count`` live admitted leases; the seconds it took."""
        started = time.monotonic()
        while len(await self.live_leases(tenant)) != count:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"tenant {tenant} never held {count} leases in {timeout} s")
            await asyncio.sleep(0.05)
        return time.monotonic() - started


def executions(records: Iterable[ResponseRecord]) -> list[Execution]:
    return [e for r in records if r.last_response is not None for e in r.last_response.executions]


def _instant(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def peak_overlap(runs: Sequence[Execution]) -> int:
    """The most runs in progress at one instant, from each run's [startedAt, +durationMs]."""
    events: list[tuple[float, int]] = []
    for run in runs:
        assert run.started_at is not None, "every execution carries startedAt"
        start = _instant(run.started_at)
        events += [(start, 1), (start + run.duration_ms / 1000, -1)]
    events.sort(key=lambda event: (event[0], event[1]))  # an end before a start at the same instant
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def wait_until_early_in_a_minute(latest_second: float = 45) -> float:
    """Seconds to sleep so that a burst starting now stays within one UTC minute."""
    into = time.time() % 60
    return 0.0 if into <= latest_second else 60 - into + 0.2


def overlapping_at_peak(runs: Sequence[Execution]) -> list[tuple[str, int]]:
    """The runs in progress together at the peak (for a failure message)."""
    best: list[tuple[str, int]] = []
    for run in runs:
        assert run.started_at is not None
        t = _instant(run.started_at) + 1e-4
        together = [(r.started_at or "", r.duration_ms) for r in runs
                    if r.started_at and _instant(r.started_at) <= t < _instant(r.started_at) + r.duration_ms / 1000]
        if len(together) > len(best):
            best = together
    return best
