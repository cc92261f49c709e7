"""The watched resource and the names the operator writes on its objects."""

from __future__ import annotations

from typing import Final

from athenic.shared.quotas import GROUP, PLURAL, VERSION

RESOURCE: Final = (GROUP, VERSION, PLURAL)
FINALIZER: Final = f"{GROUP}/policy"
"""Held while a quota's policy is published, so deleting it withdraws the policy first."""
STATE_PREFIX: Final = f"operator.{GROUP}"
"""Annotation prefix of kopf's bookkeeping (last-handled spec, handler progress)."""
READY: Final = "Ready"
