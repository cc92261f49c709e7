"""The suite's shared fixtures live in tests/support/fixtures/; folders' conftests keep their own."""

from __future__ import annotations

pytest_plugins = [
    "tests.support.fixtures.brokers",
    "tests.support.fixtures.processes",
    "tests.support.fixtures.kubernetes",
]
