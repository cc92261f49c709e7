"""What a push notification says: a generic line per status, or the answer's start when previews are on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from athenic.shared.messages import TurnFinished

TITLE: Final = "Athenic"
GENERIC: Final = {
    "completed": "Your answer is ready.",
    "failed": "Your message could not be answered.",
    "cancelled": "Your run was cancelled.",
}


@dataclass(frozen=True)
class Notification:
    title: str
    body: str
    data: dict[str, str]  # what the app opens: the conversation and the turn


def notification(event: TurnFinished, preview: bool, preview_chars: int) -> Notification:
    body = GENERIC[event.status]
    if preview and event.preview.strip():
        text = " ".join(event.preview.split())
        body = text if len(text) <= preview_chars else text[: preview_chars - 1].rstrip() + "…"
    return Notification(title=TITLE, body=body, data={
        "clientId": event.client_id, "requestId": event.request_id, "status": event.status,
    })
