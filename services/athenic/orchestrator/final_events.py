"""Telling the notifier that a turn is finished: one durable event per request in ``NOTIFY_STREAM``.

Published right after the final record is written; ``Nats-Msg-Id`` is the request id, so a
finish that runs twice (a redelivered message) inside the dedupe window is stored once.
A failed publish is logged and does not fail the turn: the answer stands, only its
notification is lost.
"""

from __future__ import annotations

from typing import Final

import nats.errors
from nats.js import JetStreamContext

from athenic.shared import names
from athenic.shared.logging import get_logger
from athenic.shared.messages import ChatRequest, ChatResponse, TurnFinished, encode, iso_timestamp

log = get_logger(__name__)
PREVIEW_CHARS: Final = 240  # the most a notification shows (the notifier may show less, or nothing)
ATTEMPTS: Final = 3


def turn_finished(request: ChatRequest, response: ChatResponse) -> TurnFinished:
    status = response.status if response.status in ("completed", "failed", "cancelled") else "failed"
    return TurnFinished(request_id=request.request_id, client_id=request.client_id, tenant=request.tenant,
                        owner=request.owner, status=status,
                        timestamp=iso_timestamp(), preview=response.message[:PREVIEW_CHARS], error=response.error)


class FinalEvents:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def publish(self, request: ChatRequest, response: ChatResponse) -> None:
        event = turn_finished(request, response)
        subject = names.finished_subject(request.tenant, request.client_id)
        headers = {names.HDR_MSG_ID: f"finished-{request.request_id}", names.HDR_REQUEST_ID: request.request_id}
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self.js.publish(subject, encode(event), timeout=5.0, headers=headers)
                return
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("could not publish the finished-turn event", attempt=attempt,
                            error=str(exc) or type(exc).__name__)
        log.error("finished-turn event lost: no notification will be sent for it", request_id=request.request_id)
