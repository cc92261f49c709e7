"""Start: kopf's bookkeeping names, the NATS buckets, the start-up resync."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import nats

from athenic.shared import names
from athenic.shared.broker import connect_options
from athenic.shared.settings import NatsSettings
from athenic.shared.topology import bucket_configs, ensure_bucket
from athenic_operator.handlers.resync import resync_until_done
from athenic_operator.resource import FINALIZER, STATE_PREFIX
from athenic_operator.settings import OperatorSettings
from athenic_operator.state import OperatorState
from athenic_operator.usage import UsageMeter


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = FINALIZER
    # kopf's own state lives in annotations: the status belongs to the SandboxQuota schema.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STATE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STATE_PREFIX, key="last-handled-configuration",
    )
    settings.posting.level = logging.INFO


async def startup(
    *,
    settings: kopf.OperatorSettings,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    operator_settings: OperatorSettings,
    nats_settings: NatsSettings,
    identity: str,
) -> None:
    configure_kopf(settings)
    options = connect_options(nats_settings, "athenic-operator")
    try:
        nc = await nats.connect(**options)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise kopf.TemporaryError(f"NATS unreachable at {nats_settings.servers}: {exc!r}", delay=2) from exc
    js = nc.jetstream(timeout=5.0)
    configs = bucket_configs(nats_settings)
    policies = await ensure_bucket(js, configs[names.POLICIES_BUCKET])
    leases = await ensure_bucket(js, configs[names.LEASES_BUCKET])
    interval = operator_settings.athenic_operator_usage_interval_seconds
    state = OperatorState(
        settings=operator_settings, nc=nc, policies=policies, leases=leases,
        usage=UsageMeter(leases, max_age=interval / 2), identity=identity,
    )
    memo.state = state
    task = asyncio.create_task(resync_until_done(state, settings), name="policies-resync")
    state.background.add(task)
    task.add_done_callback(state.background.discard)
    logger.info(f"NATS connected ({nats_settings.servers}); policies bucket {names.POLICIES_BUCKET}")
