"""The few kopf internals the operator needs, in one place.

kopf has no public API for these: listing objects with kopf's own authenticated client
(``fetch_objs``, used to list quotas and peering objects without a second Kubernetes client),
the types of namespace references and peers, and how kopf names this process in peering
(``detect_own_id``). They are private modules of kopf (tested with kopf 1.45); a kopf upgrade
that moves them breaks only this file.
"""

from __future__ import annotations

from kopf._cogs.clients.fetching import fetch_objs
from kopf._cogs.structs.references import NamespaceName
from kopf._core.engines.peering import Identity, Peer, detect_own_id

__all__ = ["Identity", "NamespaceName", "Peer", "detect_own_id", "fetch_objs"]
