"""What a POST costs the broker, counted by the nats-server itself (its monitoring endpoint).

With auth off and the default busy policy, accepting a message is one publish (and its ack):
conversations, busy policies and ownership added nothing to that path. ``reject`` rides on the
same publish; ``interrupt`` adds one fire-and-forget broadcast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nats import NatsServer, free_port, wait_for_port
from tests.support.services import Api, Service

pytestmark = pytest.mark.integration


@pytest.fixture
def monitored(tmp_path: Path) -> Iterator[tuple[NatsServer, int]]:
    port = free_port()
    with NatsServer(tmp_path / "jetstream", extra_args=["-m", str(port)]) as server:
        wait_for_port(port)
        yield server, port


def messages_from_api(monitor_port: int) -> int:
    """Messages the api's connection has sent the server (publishes and requests)."""
    connections = httpx.get(f"http://127.0.0.1:{monitor_port}/connz", timeout=5).json()["connections"]
    return sum(int(c["in_msgs"]) for c in connections if c.get("name") == "athenic-api")


def test_a_post_is_one_publish(monitored: tuple[NatsServer, int], tmp_path: Path, spawned: list[Service]) -> None:
    server, monitor = monitored
    api = Api(server.url, tmp_path)
    spawned.append(api.start())
    with httpx.Client(base_url=api.url, timeout=10) as http:
        client_id = http.post("/api/chat", json={"message": "warm up"}).json()["clientId"]
        before = messages_from_api(monitor)
        for n in range(10):
            assert http.post("/api/chat", json={"message": f"hello {n}"},
                             headers={"x-client-id": f"{client_id}-{n}"}).status_code == 200
        assert messages_from_api(monitor) - before == 10  # one publish per accepted message

        before = messages_from_api(monitor)
        assert http.post("/api/chat", json={"message": "if idle"},
                         headers={"x-client-id": f"{client_id}-idle", "x-on-busy": "reject"}).status_code == 200
        assert messages_from_api(monitor) - before == 1  # reject: the same publish, with an expectation

        before = messages_from_api(monitor)
        assert http.post("/api/chat", json={"message": "now"},
                         headers={"x-client-id": client_id, "x-on-busy": "interrupt"}).status_code == 200
        assert messages_from_api(monitor) - before == 2  # the publish and the cancel broadcast
