"""``athenic-operator`` as a process: configured from the environment, probed, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.kubernetes import Cluster, PolicyBuckets, quota_body
from tests.support.nats import free_port
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "athenic-operator"


async def test_console_script_publishes_and_stops_on_sigterm(cluster: Cluster, buckets: PolicyBuckets, nats_url: str,
                                                              tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ, "NATS_URL": nats_url, "LOG_FORMAT": "json",
        "ATHENIC_OPERATOR_KUBE_API_URL": str(cluster.emulator.url).rstrip("/"),
        "ATHENIC_OPERATOR_STANDALONE": "true", "ATHENIC_OPERATOR_LIVENESS_PORT": str(port),
    }
    log = (tmp_path / "operator.log").open("wb")
    proc = subprocess.Popen([str(SCRIPT)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        async def alive() -> bool:
            try:
                async with aiohttp.ClientSession() as session, \
                        session.get(f"http://127.0.0.1:{port}/healthz") as rsp:
                    return rsp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(alive, timeout=20, what="liveness probe up")
        await cluster.create(quota_body("acme", {"tenant": "acme"}))

        async def published() -> bool:
            return "tenant.acme" in await buckets.policy_keys()

        await eventually(published, timeout=20, what="policy published by the process")
        await eventually(lambda: cluster.status("acme").get("phase") == "Active", what="status written")

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        assert code == 0, (tmp_path / "operator.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_bad_setting_fails_fast_naming_it() -> None:
    result = subprocess.run([str(SCRIPT)], env={**os.environ, "ATHENIC_OPERATOR_LIVENESS_PORT": "http"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "ATHENIC_OPERATOR_LIVENESS_PORT" in result.stderr
