"""Memory of idle WebSockets: opens N sockets on one api process and prints RSS per socket.

Each socket follows its own conversation (the worst case: one event subscription per
clientId), then all sit idle. Per socket = the api's RSS growth over its own RSS after a
warm-up. The baseline, in the same run: a bare Litestar WebSocket handler on the same uvicorn
settings (accept, send one frame, wait), i.e. the floor of the server stack itself. The
broker's growth is printed too. Not a test: it checks only that the sockets still deliver a
change after idling.

    .venv/bin/python bench/idle_websockets.py [sockets]
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import uvicorn
import websockets
from litestar import Litestar, WebSocket, websocket
from websockets.asyncio.client import ClientConnection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support: the same process wrappers

from tests.support.nats import NatsServer, free_port, wait_for_port
from tests.support.services import Api

from athenic.shared import names
from athenic.shared.messages import ResponseRecord, encode, iso_timestamp

BATCH = 50


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def record(client_id: str, status: str = "completed") -> bytes:
    return encode(ResponseRecord(last_message="hello", last_response=None, requires_e2b=False, status=status,  # type: ignore[arg-type]
                                 request_id=f"bench-{client_id}", seq=1, updated_at=iso_timestamp()))


@websocket("/api/chat/ws/{client_id:str}")
async def bare_socket(socket: WebSocket[Any, Any, Any], client_id: str) -> None:
    await socket.accept()
    await socket.send_text('{"type":"response"}')
    with contextlib.suppress(Exception):
        while True:
            await socket.receive_text()


def serve_bare(port: int) -> None:
    uvicorn.run(Litestar([bare_socket]), host="127.0.0.1", port=port, log_level="warning",
                ws_ping_interval=20.0, ws_ping_timeout=20.0)


async def measure_bare(count: int) -> float:
    """KiB per idle socket on the bare handler (its own process, warmed up the same way)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port)])
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        for socket in await open_sockets(url, [f"warm-{i}" for i in range(BATCH)]):
            await socket.close()
        before = await settle(proc.pid)
        sockets = await open_sockets(url, [f"bare-{i}" for i in range(count)])
        after = await settle(proc.pid)
        await asyncio.gather(*(socket.close() for socket in sockets))
        return (after - before) / count
    finally:
        proc.terminate()
        proc.wait()


async def open_sockets(url: str, client_ids: list[str]) -> list[ClientConnection]:
    base = url.replace("http://", "ws://") + "/api/chat/ws/"

    async def one(client_id: str) -> ClientConnection:
        socket = await websockets.connect(base + client_id, open_timeout=30)
        await asyncio.wait_for(socket.recv(), 30)  # the current record: the socket is fully set up
        return socket

    sockets: list[ClientConnection] = []
    for start in range(0, len(client_ids), BATCH):
        sockets += await asyncio.gather(*(one(cid) for cid in client_ids[start:start + BATCH]))
    return sockets


async def settle(pid: int, seconds: float = 3.0) -> int:
    await asyncio.sleep(seconds)
    return rss_kib(pid)


@dataclass
class Measured:
    per_socket_kib: float
    before_kib: int
    after_kib: int
    broker_per_conversation_kib: float
    opened_in: float
    delivered: str


async def measure_api(count: int, conversations: int) -> Measured:
    """N idle sockets over ``conversations`` distinct clientIds, on a fresh broker and api."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        broker = NatsServer(tmp / "jetstream").start()
        api = Api(broker.url, tmp, ATHENIC_RATE_LIMIT_PER_MINUTE="0", LOG_LEVEL="WARNING").start()
        try:
            assert api.proc is not None and broker.proc is not None
            nc = await nats.connect(broker.url)
            kv = await nc.jetstream().key_value(names.RESPONSES_BUCKET)
            conversation_ids = [f"bench-{i:05d}" for i in range(conversations)]
            client_ids = [conversation_ids[i % conversations] for i in range(count)]
            warm_ids = [f"warm-{i:03d}" for i in range(BATCH)]
            for cid in conversation_ids + warm_ids:
                await kv.put(cid, record(cid))

            # warm-up: imports, first feeds and the allocator's arenas, then everything closed again
            for socket in await open_sockets(api.url, warm_ids):
                await socket.close()
            httpx.get(api.url + "/api/health")
            api_before = await settle(api.proc.pid)
            broker_before = rss_kib(broker.proc.pid)

            started = time.perf_counter()
            sockets = await open_sockets(api.url, client_ids)
            opened_in = time.perf_counter() - started
            api_after = await settle(api.proc.pid)
            broker_after = rss_kib(broker.proc.pid)

            # still alive after idling: a change of a record reaches its sockets
            sample = sorted({i % conversations for i in range(0, count, max(count // 10, 1))})
            for i in sample:
                await kv.put(conversation_ids[i], record(conversation_ids[i], status="processing"))
            got = 0
            for i in range(count):
                if i % conversations in sample:
                    frame = await asyncio.wait_for(sockets[i].recv(), 10)
                    assert '"status":"processing"' in str(frame), frame
                    got += 1
            await asyncio.gather(*(socket.close() for socket in sockets))
            await nc.close()
            return Measured((api_after - api_before) / count, api_before, api_after,
                            (broker_after - broker_before) / conversations, opened_in, f"{got}/{got}")
        except BaseException:
            print(api.log()[-4000:], file=sys.stderr)
            raise
        finally:
            api.terminate()
            broker.stop()


async def main(count: int) -> None:
    bare = await measure_bare(count)
    each = await measure_api(count, conversations=count)
    shared = await measure_api(count, conversations=1)
    print(f"{count} idle WebSockets on one api process (RSS growth over the same process after a warm-up)")
    print(f"  bare Litestar+uvicorn handler (baseline): {bare:.1f} KiB per socket")
    for label, m in (("one conversation each", each), ("all on one conversation", shared)):
        print(f"  athenic api, {label}: {m.per_socket_kib:.1f} KiB per socket (x{m.per_socket_kib / bare:.2f} "
              f"the baseline; {m.before_kib / 1024:.0f} -> {m.after_kib / 1024:.0f} MiB), opened at "
              f"{count / m.opened_in:.0f}/s, a change after idling reached {m.delivered} sampled sockets")
    print(f"  per followed conversation: ~{each.per_socket_kib - shared.per_socket_kib:.1f} KiB in the api, "
          f"{each.broker_per_conversation_kib:.1f} KiB in nats-server")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-bare"]:
        serve_bare(int(sys.argv[2]))
    else:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
