"""Every pod of every value set is restricted: non-root, read-only root, no privilege, no
capabilities, seccomp, no service-account token it does not use."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.manifests import (
    Manifest,
    containers,
    pod_specs,
)
from tests.chart.value_sets import VALUE_SETS

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


ALL_SETS = list(VALUE_SETS)


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_every_pod_is_restricted(render: Render, value_set: str) -> None:
    """Non-root, read-only root filesystem, no escalation, no capabilities, a seccomp profile."""
    bubblewrap = value_set == "local-bubblewrap"
    pods = list(pod_specs(render(value_set)))
    assert len(pods) >= 4
    for where, spec in pods:
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{where}: {host}"
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("runAsUser", 0) != 0, where
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        for item in containers(spec):
            sc = item.get("securityContext", {})
            name = f"{where} container {item['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("privileged") in (None, False), name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            assert not sc.get("capabilities", {}).get("add"), name
            assert sc.get("runAsUser", 1) != 0, name
            if bubblewrap and "orchestrator" in where:
                # the one documented exception: a Localhost profile that admits namespaces
                assert sc["seccompProfile"] == {"type": "Localhost",
                                                "localhostProfile": "profiles/athenic-bwrap.json"}
                assert spec["hostUsers"] is False
                assert sc["procMount"] == "Unmasked"
            else:
                assert sc.get("seccompProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}, name
                assert "procMount" not in sc, name
                assert "hostUsers" not in spec, name
            assert item.get("resources", {}).get("requests"), name
            assert item["resources"].get("limits"), name
            # a read-only root needs somewhere to write: /tmp is an emptyDir
            if not where.startswith(("Pod/", "StatefulSet/")):
                assert any(m["mountPath"] == "/tmp" for m in item.get("volumeMounts", [])), name
