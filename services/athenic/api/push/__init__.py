"""Pushed updates: ``GET /api/chat/ws/{clientId}`` (WebSocket) and ``/api/chat/stream/{clientId}`` (SSE).

Both send the same JSON objects, each with a ``type``: ``response`` (the fields of the GET)
at once and on every change of the record, and the progress events ``status``, ``stdout``,
``stderr`` and ``delta`` (the answer's text as it is written) while work runs, passed on by
type as the orchestrator published them. A client that reconnects with the revision it saw last
(``?after=``, or SSE's ``Last-Event-ID``) gets the record at once if it is newer, so it misses
no final answer. The frames and close codes are documented in docs/api.md (WebSocket routes are
not in the OpenAPI document).
"""

from athenic.api.push.sse import StreamController
from athenic.api.push.websocket import SocketController

__all__ = ["SocketController", "StreamController"]
