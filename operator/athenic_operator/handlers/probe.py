"""What the liveness endpoint reports besides "alive" (informative: it never fails on it,
so a broker outage does not restart the operator)."""

from __future__ import annotations

from typing import Any


def nats_connected(*, memo: Any, **_: Any) -> bool:
    state = getattr(memo, "state", None)
    return bool(state is not None and state.nc.is_connected)
