"""The leases-bucket key scheme the orchestrators write and the operator counts."""

from __future__ import annotations

import pytest

from athenic.shared.quota_keys import (
    encode_counter,
    epoch_minute,
    lease_admitted,
    lease_filter,
    lease_key,
    parse_counter,
    rate_key,
    tenant_of_lease_key,
)

pytestmark = pytest.mark.unit


def test_keys_round_trip() -> None:
    key = lease_key("acme", "3f2a")
    assert key == "lease.acme.3f2a"
    assert tenant_of_lease_key(key) == "acme"
    assert lease_filter("acme") == "lease.acme.*"
    assert rate_key("acme", epoch_minute(120.5)) == "rate.acme.2"
    assert tenant_of_lease_key("rate.acme.2") is None


@pytest.mark.parametrize(("tenant", "lease_id"), [("*", "x"), ("a.b", "x"), ("acme", "x>y"), ("", "x")])
def test_nothing_else_reaches_a_key(tenant: str, lease_id: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        lease_key(tenant, lease_id)


def test_only_admitted_leases_count_as_running() -> None:
    assert lease_admitted(b'{"holder":"o-1","admitted":true}')
    assert not lease_admitted(b'{"holder":"o-1"}')  # a candidate still being decided
    assert not lease_admitted(b"")
    assert not lease_admitted(b"not json")


def test_counters() -> None:
    assert parse_counter(encode_counter(41)) == 41
    assert parse_counter(None) == 0
    assert parse_counter(b"garbage") == 0
