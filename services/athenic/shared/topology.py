"""NATS provisioning: the request stream, the orchestrators' consumer and the KV buckets.

Every service calls ``ensure_topology`` at start; it is idempotent, so the second service to
start reuses what the first created. An existing object with another configuration is
updated where NATS allows it; otherwise ``TopologyError`` says what conflicts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, ServerError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from athenic.shared import names
from athenic.shared.settings import NatsSettings

T = TypeVar("T")

STREAM_NAME_IN_USE = 10058  # "stream name already in use with a different configuration"


class TopologyError(RuntimeError):
    """An existing NATS object conflicts with ours and NATS refuses to update it."""


def request_stream_config(settings: NatsSettings) -> StreamConfig:
    return StreamConfig(
        name=names.REQUEST_STREAM,
        description="Accepted chat messages awaiting an orchestrator",
        subjects=[names.REQUEST_SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=settings.nats_replicas,
        # an Idempotency-Key's retry reuses its request id: the dedupe window covers the idempotency window
        duplicate_window=float(max(settings.athenic_dedupe_window_seconds,
                                   settings.athenic_idempotency_window_seconds)),
        max_age=float(settings.athenic_request_max_age_seconds),
        allow_direct=True,
    )


def consumer_config(settings: NatsSettings) -> ConsumerConfig:
    return ConsumerConfig(
        name=names.ORCHESTRATOR_CONSUMER,
        durable_name=names.ORCHESTRATOR_CONSUMER,
        description="Shared by every orchestrator replica",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=float(settings.athenic_ack_wait_seconds),
        # Unlimited here: the worker gives up itself after ATHENIC_MAX_DELIVER attempts and answers
        # `failed`. A message the server stopped delivering would stay in the work queue and, being
        # the oldest of its conversation, hold back every later message of it.
        max_deliver=-1,
        max_ack_pending=10_000,
        filter_subject=names.REQUEST_SUBJECTS,
        num_replicas=settings.nats_replicas,
    )


def records_republish() -> RePublish:
    """Every stored record change, sent on to ``athenic.records.<clientId>`` with its revision.

    Push subscribes there per followed conversation: a plain subscription to the bucket's own
    subject would get the change without its revision, which ordering and resuming need.
    """
    return RePublish(src=names.kv_subject(names.RESPONSES_BUCKET, ">"), dest=f"{names.RECORD_SUBJECT_PREFIX}.>")


def notify_stream_config(settings: NatsSettings) -> StreamConfig:
    return StreamConfig(
        name=names.NOTIFY_STREAM,
        description="Finished turns to notify about, and the deliveries they fan out to",
        subjects=[f"{names.FINISHED_SUBJECT_PREFIX}.>", f"{names.DELIVERY_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=settings.nats_replicas,
        duplicate_window=float(settings.athenic_dedupe_window_seconds),
        max_age=float(settings.athenic_notify_max_age_seconds),
    )


def notify_consumer_configs(settings: NatsSettings) -> list[ConsumerConfig]:
    """The notifier's two durable consumers: finished turns, then the deliveries made of them.

    Unlimited deliveries: the notifier counts the attempts itself and gives up (``term``) after
    ATHENIC_NOTIFY_MAX_ATTEMPTS; the back-off is its ``nak`` delay.
    """
    return [
        ConsumerConfig(
            name=name, durable_name=name, description=description,
            deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0,
            max_deliver=-1, max_ack_pending=10_000, filter_subject=f"{prefix}.>",
            num_replicas=settings.nats_replicas,
        )
        for name, prefix, description in (
            (names.NOTIFIER_EVENTS_CONSUMER, names.FINISHED_SUBJECT_PREFIX, "Finished turns, for every notifier"),
            (names.NOTIFIER_DELIVERIES_CONSUMER, names.DELIVERY_SUBJECT_PREFIX, "Deliveries, for every notifier"),
        )
    ]


def bucket_configs(settings: NatsSettings) -> dict[str, KeyValueConfig]:
    turn_age = float(settings.athenic_turn_max_age_seconds)

    def bucket(name: str, description: str, ttl: float | None = None, storage: StorageType = StorageType.FILE,
               republish: RePublish | None = None, listed: bool = False) -> KeyValueConfig:
        # every bucket keeps one value per key, on as many replicas as the cluster's streams. A
        # bucket listed by pattern (kv.live_values) answers direct gets when it has one replica:
        # then the one server answering is the leader, and a direct get sees every write before
        # it (on several replicas a follower may answer one from behind: reads go to the leader).
        return KeyValueConfig(bucket=name, history=1, ttl=ttl, replicas=settings.nats_replicas, storage=storage,
                              description=description, republish=republish,
                              direct=listed and settings.nats_replicas == 1)

    configs = [
        bucket(names.RESPONSES_BUCKET, "Latest response record per clientId",
               float(settings.athenic_response_ttl_seconds), republish=records_republish()),
        bucket(names.CONVERSATIONS_BUCKET, "Owner and turn count per clientId", turn_age),
        bucket(names.TURNS_BUCKET, "Finished turns: <clientId>.<number>", turn_age),
        bucket(names.FILE_INDEX_BUCKET,
               "Conversation files' metadata: <clientId>.<name hash> (the bytes are in athenic_files)", turn_age,
               listed=True),
        bucket(names.IDEMPOTENCY_BUCKET, "Idempotency-Key -> its first request",
               float(settings.athenic_idempotency_window_seconds)),
        bucket(names.POLICIES_BUCKET, "Effective sandbox policy per tenant"),
        bucket(names.SANDBOXES_BUCKET,
               "E2B sandbox per conversation and the warm pool (no TTL: the retention sweep removes keys)"),
        bucket(names.KERNELS_BUCKET, "The orchestrator holding each conversation's local kernel", turn_age),
        bucket(names.LEASES_BUCKET, "Execution leases (per-message TTL) and each tenant's admissions"),
        bucket(names.DEVICES_BUCKET, "Push devices: <user hash>.<token hash>",
               float(settings.athenic_device_ttl_seconds), listed=True),
        bucket(names.PRESENCE_BUCKET, "Open push streams: <clientId>.<session>, refreshed while open",
               float(settings.athenic_presence_ttl_seconds), StorageType.MEMORY, listed=True),
    ]
    return {config.bucket: config for config in configs}


def object_store_configs(settings: NatsSettings) -> dict[str, ObjectStoreConfig]:
    return {
        # a file lives as long as the conversation's turns (ATHENIC_TURN_MAX_AGE_SECONDS)
        names.FILES_BUCKET: ObjectStoreConfig(
            bucket=names.FILES_BUCKET, ttl=float(settings.athenic_turn_max_age_seconds),
            replicas=settings.nats_replicas, storage=StorageType.FILE,
            description="Conversation files: <clientId>/<name>",
        ),
    }


async def _create_or_move(js: JetStreamContext, create: Callable[[], Awaitable[T]], reopen: Callable[[], Awaitable[T]],
                          stream: str, ours: Callable[[StreamConfig], StreamConfig], what: str) -> T:
    """Create a bucket (``create``); when it exists with other settings, move its stream to ours
    (TTL, replicas...) and open it again."""
    try:
        return await create()
    except BadRequestError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:
            raise
    info = await js.stream_info(stream)
    try:
        await js.update_stream(ours(info.config))
    except APIError as exc:
        raise TopologyError(f"{what} conflicts: {exc.description}") from exc
    return await reopen()


async def ensure_object_store(js: JetStreamContext, config: ObjectStoreConfig) -> ObjectStore:
    bucket = config.bucket
    assert bucket is not None
    return await _create_or_move(
        js, lambda: js.create_object_store(bucket, config), lambda: js.object_store(bucket),
        names.object_store_stream(bucket),
        lambda found: replace(found, max_age=config.ttl, num_replicas=config.replicas,
                              description=config.description),
        f"Object Store bucket {bucket}")


async def ensure_object_stores(js: JetStreamContext, settings: NatsSettings) -> dict[str, ObjectStore]:
    return {name: await ensure_object_store(js, config) for name, config in object_store_configs(settings).items()}


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:
            raise
        try:
            await js.update_stream(config)
        except APIError as update_exc:
            raise TopologyError(
                f"stream {config.name} exists with a configuration NATS cannot update to ours: "
                f"{update_exc.description}"
            ) from update_exc


async def ensure_bucket(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    def ours(found: StreamConfig) -> StreamConfig:
        return replace(found, max_age=config.ttl, num_replicas=config.replicas,
                       max_msgs_per_subject=config.history, description=config.description,
                       allow_direct=bool(config.direct),
                       duplicate_window=min(found.duplicate_window or 120.0, config.ttl or 120.0),
                       republish=config.republish)

    return await _create_or_move(js, lambda: js.create_key_value(config), lambda: js.key_value(config.bucket),
                                 names.kv_stream(config.bucket), ours, f"KV bucket {config.bucket}")


async def ensure_topology(js: JetStreamContext, settings: NatsSettings) -> dict[str, KeyValue]:
    """Create or update every stream, consumer and bucket; return the buckets by name."""
    await _ensure_stream(js, request_stream_config(settings))
    try:
        await js.add_consumer(names.REQUEST_STREAM, consumer_config(settings))
    except (BadRequestError, ServerError) as exc:
        raise TopologyError(
            f"consumer {names.ORCHESTRATOR_CONSUMER} exists with a configuration NATS cannot "
            f"update to ours: {exc.description}"
        ) from exc
    await _ensure_stream(js, notify_stream_config(settings))
    for consumer in notify_consumer_configs(settings):
        try:
            await js.add_consumer(names.NOTIFY_STREAM, consumer)
        except (BadRequestError, ServerError) as exc:
            raise TopologyError(f"consumer {consumer.name} exists with a configuration NATS cannot "
                                f"update to ours: {exc.description}") from exc
    buckets = {}
    for name, config in bucket_configs(settings).items():
        buckets[name] = await ensure_bucket(js, config)
    return buckets


__all__ = ["TopologyError", "ensure_bucket", "ensure_object_stores", "ensure_topology"]
