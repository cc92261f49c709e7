"""Defaults that are safe on a shared machine: `athenic dev` stays on loopback, and a second
orchestrator on the same machine says in one line which setting to change."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nats import NatsServer, free_port
from tests.support.paths import REPO_ROOT
from tests.support.services import Orchestrator, Service, base_env

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
REPO = REPO_ROOT


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback (what a neighbour would connect to)."""
    try:
        listing = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing.splitlines():
        words = line.split()
        if "inet" in words:
            address = words[words.index("inet") + 1].split("/")[0]
            if not ipaddress.ip_address(address).is_loopback:
                return address
    return None


def refuses(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((address, port)) != 0


@pytest.fixture
def dev_system(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """`athenic dev` with its defaults (only the ports moved), up and answering."""
    api_port, nats_port, health_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATHENIC_", "E2B_", "OPENAI_", "NATS_", "API_"))}
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [str(BIN / "athenic"), "dev", "--port", str(api_port), "--nats-port", str(nats_port),
             "--health-port", str(health_port), "--data-dir", str(tmp_path / "state")],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 60
        while "api listening" not in log.read_text() and time.monotonic() < deadline:
            assert dev.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "api listening" in log.read_text(), log.read_text()
        yield api_port, health_port, log
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()


def test_dev_is_not_reachable_on_a_non_loopback_address(dev_system: tuple[int, int, Path]) -> None:
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address (`ip -4 addr`) to try from")
    api_port, health_port, _ = dev_system
    assert httpx.get(f"http://127.0.0.1:{api_port}/api/health", timeout=5).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5).status_code == 200
    assert refuses(address, api_port), f"the api answers on {address}"
    assert refuses(address, health_port), f"the orchestrator's health port answers on {address}"


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


def test_a_second_orchestrator_names_the_taken_health_port(nats: NatsServer, tmp_path: Path) -> None:
    first = Orchestrator(nats.url, tmp_path).start()
    try:
        env = {**first.env, "LOG_FORMAT": "json"}
        second = subprocess.run([str(BIN / "athenic-orchestrator")], env=env, capture_output=True, text=True,
                                timeout=60, check=False)
    finally:
        first.terminate()
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    # besides its structured start log, exactly one line: the reason
    said = [line for line in second.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(said) == 1, second.stderr
    assert said[0].startswith("athenic-orchestrator: bad setting ATHENIC_HEALTH_PORT:")
    assert f"port {first.port} is already in use" in said[0]


def test_health_port_zero_picks_a_free_port_and_logs_it(nats: NatsServer, tmp_path: Path) -> None:
    service = Service("athenic-orchestrator",
                      base_env(nats.url, ATHENIC_HEALTH_PORT="0", ATHENIC_HEALTH_HOST="127.0.0.1"),
                      tmp_path / "orchestrator.log").start()
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline:
            assert service.proc is not None and service.proc.poll() is None, service.log()
            for line in service.log().splitlines():
                if '"health server listening"' in line:
                    port = json.loads(line)["port"]
            time.sleep(0.05)
        assert isinstance(port, int), service.log()
        assert port > 0
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        service.terminate()


def test_with_auth_on_an_unisolated_sandbox_is_refused_unless_forced(nats: NatsServer, tmp_path: Path) -> None:
    env = base_env(nats.url, ATHENIC_AUTH="supabase", ATHENIC_BWRAP_PATH="/nonexistent/bwrap",
                   ATHENIC_HEALTH_PORT="0", ATHENIC_HEALTH_HOST="127.0.0.1")
    refused = subprocess.run([str(BIN / "athenic-orchestrator")], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 2, refused.stderr
    said = [line for line in refused.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(said) == 1, refused.stderr
    assert "ATHENIC_AUTH=supabase" in said[0]
    assert "ATHENIC_SANDBOX_ALLOW_UNISOLATED=true" in said[0]
    assert "bubblewrap not found" in said[0]
    forced = Orchestrator(nats.url, tmp_path, ATHENIC_AUTH="supabase", ATHENIC_BWRAP_PATH="/nonexistent/bwrap",
                          ATHENIC_SANDBOX_ALLOW_UNISOLATED="true")
    try:
        forced.start()
        assert "LOCAL SANDBOX IS NOT ISOLATED" in forced.log()
    finally:
        forced.terminate()
