"""A scripted OpenAI-compatible server on loopback: ``POST /v1/chat/completions``.

It speaks the real wire format over real HTTP (Litestar on uvicorn, in the test's event loop),
so the planner is driven through the real ``openai`` SDK. Each request is answered by the
script — a list of replies consumed in order, or a function of the request body — and is
recorded (body and Authorization header) so tests can assert what the model was sent.

A request with ``stream: true`` gets the same reply as ``text/event-stream``: one
``chat.completion.chunk`` per piece of text (the reply's ``chunks``, else its words), the tool
calls as fragments (id and name first, the arguments in pieces), ``finish_reason`` on the
last choice chunk, a usage chunk when ``stream_options.include_usage`` asks for it, then
``data: [DONE]``. Errors are answered as JSON either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from litestar import Litestar, Request, Response, post
from litestar.response import Stream

_ids = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    body: dict[str, Any]
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    # streamed: the content in exactly these pieces (else split into words), with a pause after each
    chunks: list[str] | None = None
    chunk_delay: float = 0.0
    # streamed: end the stream after this many chunks, without a finish_reason or [DONE]
    stop_after: int | None = None


Script = Callable[[dict[str, Any]], Reply]


def _completion(message: dict[str, Any], finish_reason: str, usage: tuple[int, int] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "standin",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                         "total_tokens": usage[0] + usage[1]}
    return body


def answer(text: str, *, finish_reason: str = "stop", usage: tuple[int, int] | None = (20, 10),
           delay: float = 0.0, chunks: list[str] | None = None, chunk_delay: float = 0.0) -> Reply:
    """A final answer without tool calls (streamed in ``chunks`` when given: they must join to ``text``)."""
    assert chunks is None or "".join(chunks) == text
    return Reply(_completion({"role": "assistant", "content": text}, finish_reason, usage), delay=delay,
                 chunks=chunks, chunk_delay=chunk_delay)


def tool_call(language: str | None, code: str, *, name: str = "run_code", arguments: str | None = None,
              usage: tuple[int, int] | None = (20, 10), calls: int = 1, text: str | None = None) -> Reply:
    """``calls`` identical calls of ``name`` (arguments built from language and code unless given),
    after ``text`` when given (a model that says what it is about to do)."""
    args: dict[str, str] = {"code": code}
    if language is not None:
        args["language"] = language
    raw = arguments if arguments is not None else json.dumps(args)
    tool_calls = [
        {"id": f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": raw}}
        for _ in range(calls)
    ]
    message = {"role": "assistant", "content": text, "tool_calls": tool_calls}
    return Reply(_completion(message, "tool_calls", usage))


def error(status: int, message: str, *, code: str | None = None, err_type: str = "invalid_request_error",
          headers: dict[str, str] | None = None) -> Reply:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "code"}}``."""
    return Reply({"error": {"message": message, "type": err_type, "param": None, "code": code}},
                 status=status, headers=headers or {})


def _pieces(text: str, n: int) -> list[str]:
    """``text`` in ``n`` pieces (fewer when shorter), joining back to it."""
    size = max(1, -(-len(text) // n))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _chunks(reply: Reply, include_usage: bool) -> Iterator[dict[str, Any]]:
    """The completion in ``reply`` as the ``chat.completion.chunk`` objects of a stream."""
    body = reply.body
    choice = body["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}

    yield chunk({"role": "assistant", "content": ""})
    content = message.get("content") or ""
    for piece in reply.chunks if reply.chunks is not None else re.findall(r"\s*\S+|\s+", content):
        yield chunk({"content": piece})
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        parts = _pieces(function["arguments"], 3)
        yield chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                     "function": {"name": function["name"], "arguments": parts[0]}}]})
        for part in parts[1:]:
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
    yield chunk({}, choice["finish_reason"])
    if include_usage and body.get("usage") is not None:
        yield {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
               "model": body["model"], "choices": [], "usage": body["usage"]}


async def _event_stream(reply: Reply, include_usage: bool) -> AsyncIterator[bytes]:
    for number, item in enumerate(_chunks(reply, include_usage)):
        if reply.stop_after is not None and number >= reply.stop_after:
            return
        yield b"data: " + json.dumps(item).encode() + b"\n\n"
        if reply.chunk_delay:
            await asyncio.sleep(reply.chunk_delay)
    yield b"data: [DONE]\n\n"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Inside a test: leave Ctrl-C to pytest.
        yield


class OpenAIStandIn:
    def __init__(self, script: Script | Sequence[Reply]) -> None:
        if callable(script):
            self._script: Script = script
        else:
            replies = iter(list(script))
            self._script = lambda _body: next(
                replies, error(500, "the stand-in's script has no more replies", err_type="server_error"))
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self._stopping = asyncio.Event()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _app(self) -> Litestar:
        @post("/v1/chat/completions", status_code=200)
        async def completions(request: Request[Any, Any, Any]) -> Response[Any]:
            body: dict[str, Any] = await request.json()
            self.requests.append(body)
            self.authorizations.append(request.headers.get("authorization"))
            reply = self._script(body)
            if reply.delay:
                # A slow model; wakes early when the stand-in stops so shutdown is prompt.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), reply.delay)
            if body.get("stream") and reply.status == 200:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return Stream(_event_stream(reply, include_usage), media_type="text/event-stream",
                              headers=reply.headers)
            return Response(reply.body, status_code=reply.status, headers=reply.headers)

        return Litestar([completions], debug=False, logging_config=None)

    async def __aenter__(self) -> OpenAIStandIn:
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._socket.close()

    def tool_messages(self, request_index: int) -> list[dict[str, Any]]:
        """The ``role: tool`` messages of one recorded request."""
        return [m for m in self.requests[request_index]["messages"] if m.get("role") == "tool"]


@contextlib.contextmanager
def serving_in_thread(script: Script | Sequence[Reply]) -> Iterator[OpenAIStandIn]:
    """The stand-in on its own event loop in a thread, for synchronous tests of real processes."""
    standin = OpenAIStandIn(script)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(standin.__aenter__())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(standin.__aexit__(None, None, None))

    thread = threading.Thread(target=main, name="openai-standin", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    try:
        yield standin
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
