"""Three orchestrator replicas started together, with short leases and re-checks."""

from __future__ import annotations

import time

from tests.support.services import Orchestrator

# Short leases and re-checks keep the tests quick; production defaults are 15 s and 2 s.
QUOTA_ENV = {"ATHENIC_LEASE_TTL_SECONDS": "3", "ATHENIC_QUOTA_RECHECK_SECONDS": "0.5"}


def start_all(services: list[Orchestrator], timeout: float = 60) -> None:
    """Start the processes together, then wait until each consumes (they share 2 cores)."""
    for service in services:
        service.start(wait_ready=False)
    deadline = time.monotonic() + timeout
    for service in services:
        while "orchestrator consuming" not in service.log():
            assert service.proc is not None and service.proc.poll() is None, f"exited:\n{service.log()}"
            assert time.monotonic() < deadline, f"not consuming:\n{service.log()}"
            time.sleep(0.05)
