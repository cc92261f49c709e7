"""The push tests' api keep-alive period."""

from __future__ import annotations

PING_SECONDS = 1.0
