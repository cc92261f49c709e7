"""Push by interest: what a quiet replica pays for the other replicas' traffic.

Three api processes on one nats-server with an orchestrator answering: the first ("busy")
takes N messages over HTTP for 20 conversations whose WebSockets it holds and pushes every
answer to them; the second ("quiet") holds one WebSocket on a conversation nobody writes to;
the third ("idle") holds none. Printed: the CPU time (user + system, /proc) each api process
spent while the N messages went through, per message; the quiet replica's against the busy
one's, and against the idle one's (the baseline, in the same run). With push by interest the
quiet replica's cost is the idle one's, whatever N; with a whole-bucket watch it grew with N.
Also printed: the updates each replica received from the broker (its push metrics).

    .venv/bin/python bench/push_interest.py [messages=2000] [conversations=20]
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from _harness import API_ENV, Api, allow_executions, broker, cpu_seconds, header, orchestrator, workdir


def received(api: Api) -> int:
    text = httpx.get(f"{api.url}/metrics", timeout=10).text
    return int(sum(float(v) for v in re.findall(r"^athenic_api_push_updates_received_total\{[^}]*\} (\S+)$",
                                                  text, re.M)))


async def follow(api: Api, client_id: str) -> ClientConnection:
    socket = await websockets.connect(api.url.replace("http://", "ws://") + f"/api/chat/ws/{client_id}",
                                      open_timeout=30)
    return socket


async def answered(socket: ClientConnection, request_id: str) -> None:
    """Until the record answering ``request_id`` is pushed."""
    while True:
        frame = json.loads(await socket.recv())
        if frame.get("type") == "response" and frame.get("requestId") == request_id and \
                frame.get("status") in ("completed", "failed", "cancelled"):
            return


async def traffic(busy: Api, conversations: list[str], sockets: list[ClientConnection], messages: int) -> float:
    last: dict[str, str] = {}
    queue = [conversations[i % len(conversations)] for i in range(messages)]
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=busy.url, timeout=60) as http:

        async def poster() -> None:
            while queue:
                client_id = queue.pop()
                answer = await http.post("/api/chat", json={"message": "What is the factorial of 10?"},
                                         headers={"x-client-id": client_id})
                answer.raise_for_status()
                last[client_id] = answer.headers["x-request-id"]

        await asyncio.gather(*(poster() for _ in range(16)))
    # a conversation's messages are answered in order: its last one answered, all are
    await asyncio.wait_for(asyncio.gather(*(answered(ws, last[c]) for c, ws in zip(conversations, sockets,
                                                                                    strict=True))), 600)
    return time.monotonic() - started


async def measure(apis: dict[str, Api], messages: int, count: int) -> None:
    conversations = [str(uuid.uuid4()) for _ in range(count)]
    sockets = [await follow(apis["busy"], c) for c in conversations]
    quiet_socket = await follow(apis["quiet"], str(uuid.uuid4()))
    await traffic(apis["busy"], conversations, sockets, min(messages, 100))  # warm up
    assert apis["quiet"].proc is not None
    pids = {name: api.proc.pid for name, api in apis.items() if api.proc is not None}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    updates_before = {name: received(api) for name, api in apis.items()}
    elapsed = await traffic(apis["busy"], conversations, sockets, messages)
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    updates = {name: received(api) - updates_before[name] for name, api in apis.items()}
    for ws in [*sockets, quiet_socket]:
        await ws.close()
    print(f"   {messages} messages answered in {elapsed:.1f} s, pushed to {count} sockets on the busy replica")
    for name, label in (("busy", "busy (takes and pushes them)"), ("quiet", "quiet (1 socket, other conversation)"),
                        ("idle", "idle (no socket)")):
        print(f"   {label:38s} CPU {spent[name]:6.3f} s = {spent[name] / messages * 1e6:7.1f} us/message; "
              f"updates received from the broker: {updates[name]}")
    print(f"   quiet / busy CPU per message: {spent['quiet'] / spent['busy']:.4f}x; "
          f"quiet - idle: {(spent['quiet'] - spent['idle']) / messages * 1e6:+.1f} us/message")


def main(messages: int, count: int) -> int:
    header(f"push by interest: a quiet replica's CPU while {messages} messages go through another "
           f"({count} conversations)")
    with workdir("push-interest") as tmp, broker(tmp) as nats:
        apis = {name: Api(nats.url, tmp, **API_ENV).start() for name in ("busy", "quiet", "idle")}
        allow_executions([nats.url])
        worker = orchestrator(nats.url, tmp).start()
        try:
            asyncio.run(measure(apis, messages, count))
        finally:
            worker.terminate()
            for api in apis.values():
                api.terminate()
    return 0


if __name__ == "__main__":
    args = [int(arg) for arg in sys.argv[1:]]
    raise SystemExit(main(*(args + [2000, 20][len(args):])))
