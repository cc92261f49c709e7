"""What the benchmarks share: real processes on loopback, the machine's description, statistics.

Every benchmark starts its own nats-server (fresh store in a temp dir) and our services as
real processes through the same wrappers the tests use (``tests/support``), so what is
measured is what runs in production, on this machine, in this run.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the process wrappers live in tests/support

from tests.support.load import allow_executions  # noqa: E402
from tests.support.nats import NatsServer, free_port, nats_server_binary, wait_for_port  # noqa: E402
from tests.support.services import Api, Orchestrator  # noqa: E402

from athenic.shared import names  # noqa: E402
from athenic.shared.messages import ChatRequest, encode, iso_timestamp  # noqa: E402

# The api as deployed, minus the per-client rate limit (a load generator is one client).
API_ENV = {"ATHENIC_RATE_LIMIT_PER_MINUTE": "0"}

__all__ = ["API_ENV", "ROOT", "Api", "NatsServer", "Orchestrator", "allow_executions", "free_port", "orchestrator",
           "wait_for_port"]


def orchestrator(nats_url: str, tmp: Path, **extra: str) -> Orchestrator:
    """The orchestrator as deployed (the test wrapper shortens the fetch timeout; undo that)."""
    service = Orchestrator(nats_url, tmp, **extra)
    service.env["ATHENIC_FETCH_TIMEOUT_SECONDS"] = "5"
    return service


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nats_version = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {nats_version}, "
            f"{platform.system()} {platform.release()}")


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   machine: {machine()}")


@contextmanager
def workdir(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"athenic-bench-{name}-") as tmp:
        yield Path(tmp)


@contextmanager
def broker(tmp: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp / "jetstream").start()
    try:
        yield server
    finally:
        server.stop()


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank: no interpolation past what was measured."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


async def connect(url: str) -> tuple[Client, JetStreamContext]:
    nc = await nats.connect(url)
    return nc, nc.jetstream()


async def wait_drained(js: JetStreamContext, timeout: float) -> None:
    """Until the request stream is empty (work-queue retention: an acked message is removed)."""
    deadline = time.monotonic() + timeout
    while (await js.stream_info(names.REQUEST_STREAM)).state.messages:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the backlog did not drain within {timeout}s")
        await asyncio.sleep(0.05)


async def publish_requests(js: JetStreamContext, messages: list[tuple[str, str]]) -> None:
    """Publish (client_id, text) pairs straight into the request stream, as the api would."""

    async def one(client_id: str, text: str) -> None:
        request_id = os.urandom(16).hex()
        request = ChatRequest(request_id=request_id, client_id=client_id, message=text, submitted_at=iso_timestamp())
        await js.publish(names.request_subject(client_id), encode(request),
                         headers={names.HDR_MSG_ID: request_id, names.HDR_REQUEST_ID: request_id,
                                  names.HDR_TENANT: "default"})

    for start in range(0, len(messages), 500):
        await asyncio.gather(*(one(client_id, text) for client_id, text in messages[start:start + 500]))
