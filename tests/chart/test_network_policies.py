"""The network policies: each pod reaches what it needs and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.manifests import (
    Manifest,
    named,
    of_kind,
)

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


def test_network_policies(render: Render) -> None:
    manifests = render("defaults")
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(manifests, "NetworkPolicy")}
    assert set(policies) == {"athenic-api", "athenic-orchestrator", "athenic-operator", "athenic-notifier",
                             "athenic-nats",
                             "athenic-test-chat"}
    # the `helm test` pod: the api and DNS, nothing else, and nothing reaches it
    test_pod = policies["athenic-test-chat"]
    assert test_pod["ingress"] == []
    assert [rule["ports"][0]["port"] for rule in test_pod["egress"]] == [3000, 53]
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]

    # NATS clients: only pods of this release carrying the client label; every service has it
    nats_client = next(r for r in policies["athenic-nats"]["ingress"] if r["ports"][0]["port"] == 4222)
    (peer,) = nats_client["from"]
    selector = peer["podSelector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/instance": "athenic", "athenic.dev/nats-client": "true"}
    for name in ("athenic-api", "athenic-orchestrator", "athenic-operator", "athenic-notifier"):
        labels = named(manifests, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
    labels = named(manifests, "Pod", "athenic-test-chat")["metadata"]["labels"]
    assert not selector.items() <= labels.items(), "the test pod has no business on the broker"

    # the api: reachable from the ingress controller's namespace on its port
    (api_in,) = policies["athenic-api"]["ingress"]
    assert api_in["ports"] == [{"protocol": "TCP", "port": 3000}]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in api_in["from"]

    # the orchestrator: nothing in but scrapes; out to NATS, DNS and HTTPS on the internet only
    orch = policies["athenic-orchestrator"]
    assert [p["port"] for r in orch["ingress"] for p in r["ports"]] == [9090]
    https = next(r for r in orch["egress"] if r["ports"] == [{"protocol": "TCP", "port": 443}])
    (block,) = https["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(block["ipBlock"]["except"])
    egress_ports = {p["port"] for r in orch["egress"] for p in r["ports"]}
    assert egress_ports == {4222, 53, 443}
