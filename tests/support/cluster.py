"""A 3-node JetStream cluster on loopback, from the venv's nats-server.

Each node is a ``NatsServer`` with its own store dir, client port, cluster port and
monitoring port; routes join every node to the others. A node keeps its ports and store
across ``kill``/``start``, so it rejoins as itself (same server name) and catches up.
``with NatsCluster(root) as cluster:`` starts every node, waits until JetStream is healthy,
and stops them all on the way out.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.nats import NatsServer, free_port


class ClusterNode:
    def __init__(self, name: str, root: Path, cluster_name: str, cluster_port: int, routes: list[str]) -> None:
        self.name = name
        self.cluster_port = cluster_port
        self.monitor_port = free_port()
        self.server = NatsServer(
            root / name / "jetstream",
            extra_args=["-n", name, "--cluster_name", cluster_name,
                        "--cluster", f"nats://127.0.0.1:{cluster_port}",
                        "--routes", ",".join(routes), "-m", str(self.monitor_port)],
        )

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def running(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def start(self) -> None:
        self.server.start()

    def kill(self) -> None:
        self.server.kill()

    def stop(self) -> None:
        self.server.stop()

    def healthy(self) -> bool:
        """JetStream on this node is up and current with the meta leader (``/healthz``)."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


class NatsCluster:
    def __init__(self, root: Path, size: int = 3, cluster_name: str = "athenic") -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes: list[ClusterNode] = []
        for index, port in enumerate(cluster_ports):
            routes = [f"nats://127.0.0.1:{other}" for other in cluster_ports if other != port]
            self.nodes.append(ClusterNode(f"n{index + 1}", root, cluster_name, port, routes))

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated, as ``NATS_URL`` takes them."""
        return ",".join(self.urls)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout: float = 30) -> NatsCluster:
        for node in self.nodes:
            node.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every running node reports JetStream healthy (a meta leader is elected)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(node.healthy() for node in self.nodes if node.running):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the cluster was not healthy within {timeout}s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
