"""The suite's own ``NatsServer`` as a context manager: started on the way in, stopped on the
way out whatever happened, with ``with`` and with ``async with`` (as nats.py's tests hold theirs)."""

from __future__ import annotations

import socket
from pathlib import Path

import nats
import pytest

from tests.support.nats import NatsServer

pytestmark = pytest.mark.integration


async def _round_trip(url: str) -> bytes:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        sub = await nc.subscribe("ping")
        await nc.publish("ping", b"pong")
        return (await sub.next_msg(timeout=10)).data
    finally:
        await nc.close()


async def test_async_with_serves_inside_and_stops_outside(tmp_path: Path) -> None:
    async with NatsServer(tmp_path / "jetstream") as server:
        assert server.running
        assert await _round_trip(server.url) == b"pong"
    assert not server.running
    with pytest.raises(ConnectionRefusedError):  # nothing listens on its port any more
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def _fail_inside(server: NatsServer) -> None:
    with server:
        assert server.running
        raise RuntimeError("inside")


def test_with_stops_the_server_when_the_block_raises(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "jetstream")
    with pytest.raises(RuntimeError, match="inside"):
        _fail_inside(server)
    assert not server.running and server.proc is None
