"""`athenic quotas apply|list`: sandbox policies published without Kubernetes, against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.nats import NatsServer, free_port
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
ROOT = REPO_ROOT
ALL_IN_ONE = "examples/quotas/all-in-one.yaml"


def quotas(*args: str, nats_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATHENIC_", "NATS_"))}
    if nats_url:
        env["NATS_URL"] = nats_url
    return subprocess.run([str(BIN / "athenic"), "quotas", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=ROOT)


def listed(nats_url: str) -> dict[str, dict[str, object]]:
    result = quotas("list", "-o", "json", nats_url=nats_url)
    assert result.returncode == 0, result.stderr
    return {row["tenant"]: row for row in json.loads(result.stdout)}


def test_apply_publishes_the_file_and_list_shows_it(nats_server: NatsServer, tmp_path: Path) -> None:
    empty = quotas("list", nats_url=nats_server.url)
    assert empty.returncode == 0, empty.stderr
    assert "no policies published" in empty.stdout

    first = quotas("apply", ALL_IN_ONE, nats_url=nats_server.url)
    assert first.returncode == 0, first.stderr
    assert "2 written, 0 unchanged, 0 removed" in first.stdout
    policies = listed(nats_server.url)
    assert set(policies) == {"*", "acme"}
    assert policies["acme"]["maxConcurrentExecutions"] == 6
    assert policies["acme"]["memoryMiB"] == 1024
    assert policies["acme"]["onExceed"] == "Reject"
    assert policies["*"]["maxConcurrentExecutions"] == 2

    table = quotas("list", nats_url=nats_server.url)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:2] == ["tenant", "maxConcurrentExecutions"]
    assert sorted(row.split()[0] for row in rows) == ["*", "acme"]

    again = quotas("apply", ALL_IN_ONE, nats_url=nats_server.url)
    assert "0 written, 2 unchanged, 0 removed" in again.stdout

    # the file is the whole truth, as for the operator: a tenant left out falls back to the default
    only_acme = tmp_path / "acme.yaml"
    only_acme.write_text((ROOT / ALL_IN_ONE).read_text().split("---", 1)[1])
    pruned = quotas("apply", str(only_acme), nats_url=nats_server.url)
    assert pruned.returncode == 0, pruned.stderr
    assert "0 written, 1 unchanged, 1 removed" in pruned.stdout
    assert set(listed(nats_server.url)) == {"acme"}


def test_a_bad_file_is_refused_whole_and_changes_nothing(nats_server: NatsServer, tmp_path: Path) -> None:
    assert quotas("apply", ALL_IN_ONE, nats_url=nats_server.url).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / ALL_IN_ONE).read_text().replace("memoryMiB: 1024", "memoryMiB: 1"))
    result = quotas("apply", str(bad), nats_url=nats_server.url)
    assert result.returncode == 2
    assert "memoryMiB" in result.stderr and "refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert listed(nats_server.url)["acme"]["memoryMiB"] == 1024


def test_an_unreachable_broker_is_one_clear_line() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    result = quotas("list", nats_url=url)
    assert result.returncode != 0
    assert f"cannot reach NATS at {url}" in result.stderr
    assert "Traceback" not in result.stderr
