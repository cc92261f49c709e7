"""The chart's run-wide budgets: the mechanism is a value, and the strong one is asked of the runtime."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.manifests import Manifest, container, env_value, named
from tests.support.helm import HelmError, template_args

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]
WRITABLE = {"sandbox": {"local": {"writableCgroups": True}}}


def test_the_local_sandbox_picks_its_mechanism_by_default(render: Render) -> None:
    assert env_value(container(render("dev"), "athenic-orchestrator"), "ATHENIC_SANDBOX_LIMITS") == "auto"
    forced = render("dev", {"sandbox": {"local": {"limits": "watchdog"}}})
    assert env_value(container(forced, "athenic-orchestrator"), "ATHENIC_SANDBOX_LIMITS") == "watchdog"


def test_writable_cgroups_ask_the_runtime_and_insist(render: Render) -> None:
    manifests = render("local-bubblewrap", WRITABLE)
    pod = named(manifests, "Deployment", "athenic-orchestrator")["spec"]["template"]
    assert pod["metadata"]["annotations"]["io.kubernetes.cri-o.cgroup2-mount-hierarchy-rw"] == "true"
    assert pod["spec"]["hostUsers"] is False  # root in there is nobody on the node
    orchestrator = container(manifests, "athenic-orchestrator")
    assert orchestrator["securityContext"]["runAsUser"] == 0
    assert orchestrator["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # a node that does not delegate fails the pod at start instead of silently using the watchdog
    assert env_value(orchestrator, "ATHENIC_SANDBOX_LIMITS") == "cgroup"
    plain = named(render("local-bubblewrap"), "Deployment", "athenic-orchestrator")["spec"]["template"]
    assert "io.kubernetes.cri-o.cgroup2-mount-hierarchy-rw" not in plain["metadata"].get("annotations", {})


def test_writable_cgroups_outside_a_user_namespaced_pod_are_refused(helm_run: Callable[[list[str]], str]) -> None:
    with pytest.raises(HelmError, match="writableCgroups needs"):
        helm_run(template_args(set_values={"sandbox.backend": "local", "sandbox.local.writableCgroups": "true"}))
