"""Wait until this replica is the one that acts, by kopf's own peering rules.

kopf pauses the handlers of a replica while a live peer of higher (or equal) priority is
listed in the peering object, but the start-up resync runs outside the handlers; it
reads the same object and waits the same way, so a standby replica never writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import kopf

from athenic_operator.kopf_internals import Identity, NamespaceName, Peer, fetch_objs

CLUSTER_PEERINGS = kopf.Resource("kopf.dev", "v1", "clusterkopfpeerings", kind="ClusterKopfPeering",
                                 namespaced=False)
NAMESPACED_PEERINGS = kopf.Resource("kopf.dev", "v1", "kopfpeerings", kind="KopfPeering", namespaced=True)


async def blocking_peers(
    settings: kopf.OperatorSettings, identity: str, namespaces: Sequence[str], logger: logging.Logger,
) -> list[str]:
    """The live peers that make kopf pause this replica (empty: this one acts)."""
    if settings.peering.standalone:
        return []
    resource = CLUSTER_PEERINGS if settings.peering.clusterwide else NAMESPACED_PEERINGS
    scopes: list[NamespaceName | None] = (
        [None] if settings.peering.clusterwide else [NamespaceName(ns) for ns in namespaces]
    )
    blocking: list[str] = []
    for namespace in scopes:
        async for items, _ in fetch_objs(settings=settings, resource=resource,
                                                  namespace=namespace, logger=logger):
            for item in items:
                if item.get("metadata", {}).get("name") != settings.peering.name:
                    continue
                for peer_id, info in (item.get("status") or {}).items():
                    peer = Peer(identity=Identity(peer_id), **info)
                    if peer_id != identity and not peer.is_dead and peer.priority >= settings.peering.priority:
                        blocking.append(peer_id)
    return blocking


async def wait_until_acting(
    settings: kopf.OperatorSettings, identity: str, namespaces: Sequence[str], logger: logging.Logger,
    poll: float = 1.0,
) -> None:
    while peers := await blocking_peers(settings, identity, namespaces, logger):
        logger.debug(f"resync waits: peers {peers} act")
        await asyncio.sleep(poll)
