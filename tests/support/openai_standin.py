"""A scripted OpenAI-compatible server on loopback: ``POST /v1/chat/completions``, non-streaming.

It speaks the real wire format over real HTTP (Litestar on uvicorn, in the test's event loop),
so the planner is driven through the real ``openai`` SDK. Each request is answered by the
script — a list of replies consumed in order, or a function of the request body — and is
recorded (body and Authorization header) so tests can assert what the model was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from litestar import Litestar, Request, Response, post

_ids = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    body: dict[str, Any]
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


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
           delay: float = 0.0) -> Reply:
    """A final answer without tool calls."""
    return Reply(_completion({"role": "assistant", "content": text}, finish_reason, usage), delay=delay)


def tool_call(language: str | None, code: str, *, name: str = "run_code", arguments: str | None = None,
              usage: tuple[int, int] | None = (20, 10), calls: int = 1) -> Reply:
    """``calls`` identical calls of ``name`` (arguments built from language and code unless given)."""
    args: dict[str, str] = {"code": code}
    if language is not None:
        args["language"] = language
    raw = arguments if arguments is not None else json.dumps(args)
    tool_calls = [
        {"id": f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": raw}}
        for _ in range(calls)
    ]
    message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return Reply(_completion(message, "tool_calls", usage))


def error(status: int, message: str, *, code: str | None = None, err_type: str = "invalid_request_error",
          headers: dict[str, str] | None = None) -> Reply:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "code"}}``."""
    return Reply({"error": {"message": message, "type": err_type, "param": None, "code": code}},
                 status=status, headers=headers or {})


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
        async def completions(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
            body: dict[str, Any] = await request.json()
            self.requests.append(body)
            self.authorizations.append(request.headers.get("authorization"))
            reply = self._script(body)
            if reply.delay:
                # A slow model; wakes early when the stand-in stops so shutdown is prompt.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), reply.delay)
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
