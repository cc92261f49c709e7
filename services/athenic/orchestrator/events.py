"""Progress events: status changes and output chunks, on a per-client core-NATS subject.

Events are best effort (the response record stays the source of truth): a failure to
publish one is logged and never fails the work.
"""

from __future__ import annotations

from typing import Literal

from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import get_logger
from athenic.shared.messages import Phase, ProgressEvent, encode, iso_timestamp

log = get_logger(__name__)


class EventPublisher:
    def __init__(self, broker: Broker, client_id: str, request_id: str) -> None:
        self.broker = broker
        self.subject = names.event_subject(client_id)
        self.client_id = client_id
        self.request_id = request_id

    async def _publish(self, event: ProgressEvent) -> None:
        try:
            await self.broker.nc.publish(self.subject, encode(event))
        except Exception as exc:
            log.debug("progress event not published", error=str(exc))

    async def phase(self, phase: Phase) -> None:
        await self._publish(ProgressEvent(type="status", client_id=self.client_id, request_id=self.request_id,
                                          timestamp=iso_timestamp(), phase=phase))

    async def output(self, stream: str, chunk: str) -> None:
        kind: Literal["stdout", "stderr"] = "stderr" if stream == "stderr" else "stdout"
        await self._publish(ProgressEvent(type=kind, client_id=self.client_id, request_id=self.request_id,
                                          timestamp=iso_timestamp(), data=chunk))
