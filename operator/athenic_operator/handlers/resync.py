"""At start: make the policies bucket hold exactly the policies of the valid quotas.

kopf's resume handlers re-publish each existing quota's tenant, but nothing would remove
the key of a tenant whose quota was deleted while no operator ran. So, once per start and
only once this replica is the one acting (kopf's peering), the bucket is read, the quotas
are listed, and the bucket is reconciled to them with compare-and-set against the
snapshot: a write made meanwhile is newer than this view and is left alone.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from athenic.shared.quotas import PublishReport, quota_of, read_bucket, reconcile_bucket, resolve
from athenic_operator.cluster_listing import list_quotas
from athenic_operator.peering_gate import wait_until_acting
from athenic_operator.state import OperatorState

log = logging.getLogger(__name__)


async def resync_bucket(state: OperatorState, settings: kopf.OperatorSettings) -> PublishReport:
    await wait_until_acting(settings, state.identity, state.settings.namespaces, log)
    snapshot = await read_bucket(state.policies)
    objects = await list_quotas(settings, state.settings.namespaces, log)
    resolution = resolve(quota_of(obj) for obj in objects)
    return await reconcile_bucket(state.policies, resolution.policies, snapshot)


async def resync_until_done(state: OperatorState, settings: kopf.OperatorSettings) -> None:
    delay = 0.5
    while True:
        try:
            report = await resync_bucket(state, settings)
        except asyncio.CancelledError:
            raise
        except Exception:  # retried: the broker or the API server may not be up yet
            log.exception(f"policies bucket resync failed; retrying in {delay}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        log.info(
            f"policies bucket resynced: written={report.written} removed={report.removed} "
            f"unchanged={len(report.unchanged)} left-to-newer-writes={report.conflicts}"
        )
        return
