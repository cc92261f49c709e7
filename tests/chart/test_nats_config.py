"""The NATS configuration the chart renders, run by a real nats-server.

Only what a pod provides differs: ports, the store directory (the pod's volume) and, for the
cluster, the route addresses (the pods' DNS names) are given on the command line.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest

from athenic.shared import names
from athenic.shared.settings import NatsSettings, load
from athenic.shared.topology import ensure_topology
from tests.chart.manifests import Manifest, named
from tests.support.nats import NatsServer, free_port

pytestmark = pytest.mark.integration

Render = Callable[..., list[Manifest]]
USER, PASSWORD = "athenic", "rendered-config-password"  # the cluster routes' login
# each service's own login (the server reads the passwords from its environment)
SERVICE_PASSWORDS = {"api": "api-pw", "orchestrator": "orchestrator-pw", "operator": "operator-pw",
                     "notifier": "notifier-pw"}


def write_config(render: Render, value_set: str, folder: Path) -> Path:
    conf = named(render(value_set), "ConfigMap", "athenic-nats-config")["data"]["nats.conf"]
    # the volume's mount path in the pod; here the store directory comes from the command line
    assert "store_dir: /data\n" in conf
    path = folder / f"{value_set}.conf"
    path.write_text(conf.replace("store_dir: /data\n", ""))
    return path


@pytest.fixture
def pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # what the StatefulSet puts in the environment: the config reads them as $VARS
    monkeypatch.setenv("SERVER_NAME", "athenic-nats-0")
    monkeypatch.setenv("NATS_USER", USER)
    monkeypatch.setenv("NATS_PASSWORD", PASSWORD)
    for service, password in SERVICE_PASSWORDS.items():
        monkeypatch.setenv(f"NATS_{service.upper()}_PASSWORD", password)


@pytest.fixture
def servers() -> Iterator[list[NatsServer]]:
    started: list[NatsServer] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def pod_overrides(tmp: Path) -> list[str]:
    return ["-m", str(free_port()), "-P", str(tmp / f"nats-{os.getpid()}-{free_port()}.pid")]


@pytest.mark.usefixtures("pod_env")
async def test_single_server_config_runs_with_auth_and_jetstream(
        render: Render, tmp_path: Path, servers: list[NatsServer]) -> None:
    conf = write_config(render, "defaults", tmp_path)
    server = NatsServer(tmp_path / "store", extra_args=["-c", str(conf), *pod_overrides(tmp_path)])
    servers.append(server.start())

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)

    nc = await nats.connect(server.url, user="orchestrator", password=SERVICE_PASSWORDS["orchestrator"])
    try:
        settings = load(NatsSettings, {"NATS_URL": server.url, "NATS_REPLICAS": "1"})
        buckets = await ensure_topology(nc.jetstream(), settings)
        assert buckets, "the services' topology provisions on the chart's NATS"
        info = await nc.jetstream().account_info()
        assert info.limits.max_memory == -1 or info.limits.max_memory > 0
    finally:
        await nc.close()


@pytest.mark.usefixtures("pod_env")
async def test_three_server_config_forms_a_jetstream_cluster(
        render: Render, tmp_path: Path, servers: list[NatsServer]) -> None:
    conf = write_config(render, "production", tmp_path)
    text = conf.read_text()
    assert text.count("nats://athenic-nats-") == 3
    assert "authorization" in text
    cluster_ports = [free_port() for _ in range(3)]
    # the pods' DNS names become loopback addresses; the route login is the rendered one
    routes = ",".join(f"nats://{USER}:{PASSWORD}@127.0.0.1:{p}" for p in cluster_ports)
    for index, port in enumerate(cluster_ports):
        args = ["-c", str(conf), "-n", f"athenic-nats-{index}", "--cluster", f"nats://127.0.0.1:{port}",
                "--routes", routes, *pod_overrides(tmp_path)]
        servers.append(NatsServer(tmp_path / f"store-{index}", extra_args=args).start())

    nc = await nats.connect([s.url for s in servers], user="orchestrator", password=SERVICE_PASSWORDS["orchestrator"])
    try:
        js = nc.jetstream()
        settings = load(NatsSettings, {"NATS_URL": servers[0].url, "NATS_REPLICAS": "3"})
        # R3 streams need the three servers to have met and elected a meta leader
        for _ in range(100):
            try:
                await ensure_topology(js, settings)
                break
            except Exception:  # "insufficient resources" until the three servers have met
                await asyncio.sleep(0.2)
        info = await js.stream_info(names.REQUEST_STREAM)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2
    finally:
        await nc.close()
