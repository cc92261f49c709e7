"""What the handlers share for the operator's lifetime (kept in kopf's ``memo``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js.kv import KeyValue

from athenic_operator.settings import OperatorSettings
from athenic_operator.usage import UsageMeter


@dataclass
class OperatorState:
    settings: OperatorSettings
    nc: Client
    policies: KeyValue
    leases: KeyValue
    usage: UsageMeter
    identity: str  # this replica's name among its peers
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    next_sweep: float = 0.0  # monotonic time of the next whole-bucket reconcile
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one policies-bucket writer at a time


def state_of(memo: Any) -> OperatorState:
    state: OperatorState = memo.state
    return state
