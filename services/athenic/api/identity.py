"""Who is calling: the user (owner of the clientIds they create) and their tenant."""

from __future__ import annotations

from dataclasses import dataclass

from athenic.shared.names import ANONYMOUS_TENANT


@dataclass(frozen=True)
class Identity:
    user: str | None  # None when auth is off: every caller is the same anonymous user
    tenant: str = ANONYMOUS_TENANT
    # The caller's address (the rate-limit key when there is no user).
    address: str | None = None
    # When the token stops being valid (epoch seconds); a WebSocket closes then.
    expires_at: float | None = None

    def may_access(self, owner: str | None) -> bool:
        return owner is None or owner == self.user

    @property
    def rate_key(self) -> str:
        return f"user:{self.user}" if self.user is not None else f"ip:{self.address or 'unknown'}"


ANONYMOUS = Identity(user=None)
