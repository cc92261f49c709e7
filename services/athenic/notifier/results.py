"""What one delivery attempt came to: every failure is either worth retrying or final."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from athenic.shared.messages import Delivery


@dataclass(frozen=True)
class Result:
    """``sent``; ``retry`` (transient: back off and try again); ``dead`` (the service says the
    device token is gone: remove the device); ``refused`` (permanent: retrying cannot help)."""

    outcome: Literal["sent", "retry", "dead", "refused"]
    reason: str = ""
    retry_after: float | None = None  # what the service asked for (Retry-After), if anything


SENT = Result("sent")


def retry(reason: str, retry_after: float | None = None) -> Result:
    return Result("retry", reason, retry_after)


def dead(reason: str) -> Result:
    return Result("dead", reason)


def refused(reason: str) -> Result:
    return Result("refused", reason)


def retry_after_header(value: str | None) -> float | None:
    if value is not None and value.strip().isdigit():
        return float(value.strip())
    return None


class Sender(Protocol):
    async def send(self, delivery: Delivery) -> Result: ...

    async def aclose(self) -> None: ...
