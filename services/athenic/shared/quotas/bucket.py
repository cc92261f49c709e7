"""The policies bucket: read it with revisions, and make it hold exactly the given policies
(stale keys removed), writing only what differs, with compare-and-set against a snapshot taken
before the caller read its objects, so it never overwrites a newer write by someone else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from athenic.shared.policy import SandboxPolicy, encode_policy, policy_key


@dataclass(frozen=True)
class Stored:
    revision: int
    value: bytes


# nats-py may queue a watcher's "no more initial values" marker before entries already in
# flight when the consumer's info says nothing is pending; entries then follow at once.
_STRAGGLER_WAIT = 0.25
_GONE_AFTER = 5.0  # seconds an ended watch's consumer stays on the server


async def read_bucket(kv: KeyValue, keys: str = ">", *, values: bool = True,
                      timeout: float = 5.0) -> dict[str, Stored]:
    """Every live key matching ``keys`` with its revision (and value unless ``values`` is
    false: then ``b""``). Reads until the entry the server marked as the last one pending."""
    # (the consumer goes a few seconds after the watch stops, not after nats-py's five minutes)
    watcher = await kv.watch(keys, meta_only=not values, inactive_threshold=_GONE_AFTER)
    found: dict[str, Stored] = {}
    try:
        async with asyncio.timeout(timeout):
            entry = await _next(watcher, None)
            if entry is None:  # "nothing pending": true, unless entries are still in flight
                entry = await _next(watcher, _STRAGGLER_WAIT)
            while entry is not None:
                if entry.operation is None:  # a value, not a delete/purge/expiry marker
                    found[entry.key] = Stored(entry.revision or 0, entry.value or b"")
                else:
                    found.pop(entry.key, None)
                if entry.delta == 0:
                    break
                entry = await _next(watcher, None)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found


async def _next(watcher: KeyValue.KeyWatcher, wait: float | None) -> KeyValue.Entry | None:
    """The watcher's next entry; None for its end-of-initial-values marker or after ``wait``."""
    try:
        entry: KeyValue.Entry | None = await watcher.updates(timeout=wait)  # type: ignore[no-untyped-call]
    except nats.errors.TimeoutError:
        return None
    return entry


@dataclass
class PublishReport:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # changed by someone else meanwhile: left alone


async def reconcile_bucket(
    kv: KeyValue, policies: Iterable[SandboxPolicy], snapshot: Mapping[str, Stored]
) -> PublishReport:
    """Make the bucket hold exactly ``policies``, comparing-and-setting against ``snapshot``
    (from ``read_bucket``, taken before the policies were computed)."""
    report = PublishReport()
    wanted = {policy_key(policy.tenant): encode_policy(policy) for policy in policies}
    for key, value in wanted.items():
        stored = snapshot.get(key)
        if stored is not None and stored.value == value:
            report.unchanged.append(key)
            continue
        try:
            if stored is None:
                await kv.create(key, value)
            else:
                await kv.update(key, value, last=stored.revision)
            report.written.append(key)
        except KeyWrongLastSequenceError:
            report.conflicts.append(key)
    for key, stored in snapshot.items():
        if key in wanted:
            continue
        try:
            await kv.delete(key, last=stored.revision)
            report.removed.append(key)
        except KeyWrongLastSequenceError:
            report.conflicts.append(key)
    return report


async def publish_policies(kv: KeyValue, policies: Iterable[SandboxPolicy]) -> PublishReport:
    """Publish ``policies`` as the operator does: the bucket ends with exactly these."""
    return await reconcile_bucket(kv, list(policies), await read_bucket(kv))


async def publish_policy(kv: KeyValue, policy: SandboxPolicy) -> bool:
    """Put one tenant's policy unless it is already there; True when written."""
    key, value = policy_key(policy.tenant), encode_policy(policy)
    stored = await _get(kv, key)
    if stored == value:
        return False
    await kv.put(key, value)
    return True


async def withdraw_policy(kv: KeyValue, tenant: str) -> bool:
    """Remove one tenant's policy (its requests fall back to the default); True when removed."""
    key = policy_key(tenant)
    if await _get(kv, key) is None:
        return False
    await kv.delete(key)
    return True


async def _get(kv: KeyValue, key: str) -> bytes | None:
    try:  # KeyDeletedError is a KeyNotFoundError
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return entry.value or None
