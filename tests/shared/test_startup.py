"""A started service's heap is settled: later full collections leave start-up's objects alone.

Run in a fresh interpreter (freezing the test runner's heap would keep every test's garbage)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = """
import gc, json
import athenic.orchestrator.main, athenic.api.app, athenic.notifier.main
from athenic.shared.startup import settle_heap
gc.collect()
before = len(gc.get_objects())
settle_heap()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "walked": len(gc.get_objects())}))
"""


def test_a_full_collection_after_start_up_walks_none_of_its_objects() -> None:
    found = json.loads(subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True,
                                      text=True, timeout=120).stdout)
    assert found["before"] > 10_000, found  # (the services' modules: tens of thousands of objects)
    assert found["frozen"] > found["before"] * 0.99, found
    assert found["walked"] < found["before"] // 100, found
