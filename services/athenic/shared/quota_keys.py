"""Keys of the leases bucket: what enforcement writes and the operator counts.

The orchestrators enforce a tenant's quota with two kinds of keys in ``LEASES_BUCKET``;
the operator only reads them to report ``status.used``. Both sides build keys here.

``lease.<tenant>.<lease_id>``
    One key per execution of the tenant. Created (``kv.create``, so an id is never reused)
    with a per-message TTL and refreshed while the run lasts, so a lease of a replica that
    died expires on its own; deleted or purged when the run ends. Its value is a JSON
    object; ``"admitted": true`` marks a lease whose execution was admitted and runs now,
    a key without it is a candidate still being decided (``lease_admitted``). The number of
    live (not deleted, not expired) admitted ``lease.<tenant>.*`` keys is the tenant's
    concurrent executions. A lease may also hold ``"reserve": n`` executions of the minute
    ``"minute"``, counted in ``started`` for its holder's next runs and not run yet, and be
    ``"parked": true`` between those runs (listed, not admitted; ``LeaseValue``).

``slots.<tenant>``
    The tenant's admissions, written by the orchestrators and read by the operator: a JSON
    object ``{"leases": [lease_id, ...], "minute": epoch_minute, "started": n}``, changed only
    by compare-and-set on its revision. ``leases`` are the ids of the tenant's admitted leases:
    admission appends an id when fewer ids than the limit still have a live lease, a release
    removes its id. ``started`` is the number of executions admitted in the UTC minute
    ``minute`` (``epoch_minute = int(unix_seconds // 60)``; an older minute counts 0), counted
    by the same write that admits, with what the admitted leases reserve; the executions
    started in the minute are ``started`` less the live leases' ``reserve`` of it. One key
    serialises a tenant's admissions across replicas (see ``athenic.orchestrator.leases``).

``<tenant>`` is the request's tenant (never ``*``: the default quota governs each tenant
without its own separately). Tenants and lease ids match ``[A-Za-z0-9_-]{1,128}``, so a
key never holds another ``.``, ``*`` or ``>``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from athenic.shared import names

LEASE_PREFIX: Final = "lease"
SLOTS_PREFIX: Final = "slots"
ALL_LEASES: Final = f"{LEASE_PREFIX}.>"
"""The subject filter matching every lease key (watch/keys filter)."""
ALL_SLOTS: Final = f"{SLOTS_PREFIX}.*"
"""The subject filter matching every tenant's ``slots`` key."""


def lease_prefix(tenant: str) -> str:
    """``lease.<tenant>.``: every lease key of the tenant starts with it."""
    return f"{LEASE_PREFIX}.{names.checked(tenant, 'tenant')}."


def lease_filter(tenant: str) -> str:
    """The watch/keys filter of the tenant's leases: ``lease.<tenant>.*``."""
    return f"{lease_prefix(tenant)}*"


def lease_key(tenant: str, lease_id: str) -> str:
    return f"{lease_prefix(tenant)}{names.checked(lease_id, 'lease id')}"


def tenant_of_lease_key(key: str) -> str | None:
    """The tenant of a lease key, or None when the key is not a lease key."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != LEASE_PREFIX:
        return None
    return parts[1]


class LeaseValue(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """What a lease key holds: who holds it, for which request, whether its run goes on, and
    what it keeps for its holder's next runs of the tenant (``athenic.orchestrator.leases``)."""

    holder: str = ""
    request_id: str = ""
    admitted: bool = False
    parked: bool = False  # its run ended; still listed, for its holder's next run of the tenant
    minute: int = 0  # the epoch minute whose count holds this lease's admission and ``reserve``
    reserve: int = 0  # executions counted in ``minute`` that no run used yet (held for the next runs)


_lease_decoder: Final = msgspec.json.Decoder(LeaseValue)


def decode_lease(value: bytes | None) -> LeaseValue:
    """A lease key's value; an empty or unreadable one holds nothing (not admitted, no reserve)."""
    if not value:
        return LeaseValue()
    try:
        return _lease_decoder.decode(value)
    except msgspec.DecodeError:
        return LeaseValue()


def lease_admitted(value: bytes | None) -> bool:
    """Whether a lease key's value marks an admitted (running) execution."""
    return decode_lease(value).admitted


def lease_reserve(value: bytes | None, minute: int) -> int:
    """The executions a lease holds for later runs in ``minute``: counted in the tenant's
    ``started`` of that minute, but not (yet) run."""
    lease = decode_lease(value)
    return lease.reserve if lease.minute == minute else 0


def slots_key(tenant: str) -> str:
    return f"{SLOTS_PREFIX}.{names.checked(tenant, 'tenant')}"


def tenant_of_slots_key(key: str) -> str | None:
    parts = key.split(".")
    return parts[1] if len(parts) == 2 and parts[0] == SLOTS_PREFIX else None


def epoch_minute(unix_seconds: float) -> int:
    return int(unix_seconds // 60)


class Slots(msgspec.Struct, frozen=True):
    """The value of ``slots.<tenant>``: the admitted lease ids and the minute's admissions."""

    leases: list[str] = msgspec.field(default_factory=list)
    minute: int = 0
    started: int = 0

    def started_in(self, minute: int) -> int:
        """The executions admitted in ``minute`` (none when the key counts an older one)."""
        return self.started if self.minute == minute else 0


_slots_decoder: Final = msgspec.json.Decoder(Slots)


def decode_slots(value: bytes | None) -> Slots:
    """A ``slots`` value; an absent or unreadable one is empty (the next admission rewrites it)."""
    if not value:
        return Slots()
    try:
        return _slots_decoder.decode(value)
    except msgspec.DecodeError:
        return Slots()


def encode_slots(slots: Slots) -> bytes:
    return msgspec.json.encode(slots)
