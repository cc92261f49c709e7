"""The history route's pages: a conversation's turns, newest first, a page at a time.

Turns are numbered 1, 2, ... in submission order. Finished ones are read from the log; the
messages still in the request stream come after them (the oldest is the one being answered),
numbered on from the last finished turn. A page's cursor (``nextBefore``) is the lowest turn
number it holds: the next page asks for the turns before it.
"""

from __future__ import annotations

import msgspec

from athenic.shared.conversations import ConversationLog, Waiting
from athenic.shared.messages import FINAL_STATUSES, ResponseRecord, Turn

# Messages still waiting that one page looks at (a conversation rarely has more queued).
MAX_WAITING_SHOWN = 100


class HistoryPage(msgspec.Struct, frozen=True, rename="camel"):
    client_id: str
    messages: list[Turn]
    next_before: int | None


def _waiting_turn(waiting: Waiting, record: ResponseRecord | None) -> Turn:
    request = waiting.request
    if record is not None and record.request_id == request.request_id:
        # being answered now (or answered, its ack on the way)
        response = record.last_response if record.status in FINAL_STATUSES else None
        return Turn(request_id=request.request_id, message=request.message, submitted_at=request.submitted_at,
                    status=record.status, response=response)
    return Turn(request_id=request.request_id, message=request.message, submitted_at=request.submitted_at,
                status="pending")


async def history_page(log: ConversationLog, client_id: str, record: ResponseRecord | None,
                       waiting: list[Waiting], limit: int, before: int | None) -> HistoryPage:
    """``waiting`` is read before the conversation key: a turn finishing in between is in both, once."""
    conversation, _ = await log.conversation(client_id)
    finished = conversation.turns if conversation is not None else 0
    if conversation is not None and conversation.last_request_id is not None:
        waiting = [w for w in waiting if w.request.request_id != conversation.last_request_id]
    total = finished + len(waiting)
    top = total if before is None else min(before - 1, total)
    oldest = log.first_kept(conversation) if conversation is not None else 1
    low = max(top - limit + 1, oldest)
    numbers = list(range(top, low - 1, -1))
    found = await log.finished(client_id, [n for n in numbers if n <= finished])
    items: list[Turn] = []
    lowest = None
    for number in numbers:
        if number > finished:
            items.append(_waiting_turn(waiting[number - finished - 1], record))
        elif number in found:
            items.append(found[number])
        else:  # gone with the age retention, and so is every older turn
            lowest = None
            break
        lowest = number
    next_before = lowest if lowest is not None and lowest > oldest else None
    return HistoryPage(client_id=client_id, messages=items, next_before=next_before)



