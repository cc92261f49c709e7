"""The leases-bucket key scheme the orchestrators write and the operator counts."""

from __future__ import annotations

import pytest

from athenic.shared.quota_keys import (
    Slots,
    decode_slots,
    encode_slots,
    epoch_minute,
    lease_admitted,
    lease_filter,
    lease_key,
    slots_key,
    tenant_of_lease_key,
    tenant_of_slots_key,
)

pytestmark = pytest.mark.unit


def test_keys_round_trip() -> None:
    key = lease_key("acme", "3f2a")
    assert key == "lease.acme.3f2a"
    assert tenant_of_lease_key(key) == "acme"
    assert lease_filter("acme") == "lease.acme.*"
    assert slots_key("acme") == "slots.acme"
    assert tenant_of_slots_key("slots.acme") == "acme"
    assert tenant_of_lease_key("slots.acme") is None
    assert tenant_of_slots_key("lease.acme.3f2a") is None


@pytest.mark.parametrize(("tenant", "lease_id"), [("*", "x"), ("a.b", "x"), ("acme", "x>y"), ("", "x")])
def test_nothing_else_reaches_a_key(tenant: str, lease_id: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        lease_key(tenant, lease_id)


def test_only_admitted_leases_count_as_running() -> None:
    assert lease_admitted(b'{"holder":"o-1","admitted":true}')
    assert not lease_admitted(b'{"holder":"o-1"}')  # a candidate still being decided
    assert not lease_admitted(b"")
    assert not lease_admitted(b"not json")


def test_the_minute_count_lives_with_the_list() -> None:
    minute = epoch_minute(120.5)
    assert minute == 2
    slots = decode_slots(encode_slots(Slots(["a", "b"], minute=minute, started=41)))
    assert slots == Slots(["a", "b"], 2, 41)
    assert slots.started_in(2) == 41
    assert slots.started_in(3) == 0  # a new minute starts from nothing
    assert decode_slots(None) == Slots()
    assert decode_slots(b"garbage") == Slots()
    assert decode_slots(b'{"leases":["x"]}') == Slots(["x"])  # a list written before minutes were kept
