"""The local sandbox backend as the chart renders it (bubblewrap, its seccomp profile)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.manifests import (
    Manifest,
    container,
    env,
    env_value,
)
from tests.support.helm import HelmError, template_args

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


def test_local_sandbox_is_rendered_as_documented(render: Render,
                                                 helm_run: Callable[[list[str]], str]) -> None:
    dev = container(render("dev"), "athenic-orchestrator")
    assert env_value(dev, "ATHENIC_SANDBOX") == "local"
    assert "E2B_API_KEY" not in env(dev)
    bwrap = container(render("local-bubblewrap"), "athenic-orchestrator")
    assert env_value(bwrap, "ATHENIC_SANDBOX") == "local"
    with pytest.raises(HelmError, match="seccompProfile"):
        helm_run(template_args(set_values={"sandbox.backend": "local", "sandbox.local.isolation": "bubblewrap"}))
