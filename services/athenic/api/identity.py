"""Who is calling: the user (owner of the clientIds they create) and their tenant."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Identity:
    user: str | None  # None when auth is off: every caller is the same anonymous user
    tenant: str = DEFAULT_TENANT

    def may_access(self, owner: str | None) -> bool:
        return owner is None or owner == self.user


ANONYMOUS = Identity(user=None)


async def provide_identity() -> Identity:
    return ANONYMOUS
