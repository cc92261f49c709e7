"""The broker: the bundled NATS for dev and production, an external one (URL, login or creds),
the bundled login from an existing Secret."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.manifests import (
    Manifest,
    container,
    env,
    env_value,
    named,
    of_kind,
    secret_ref,
)
from tests.chart.value_sets import VALUE_SETS

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


def test_bundled_nats_dev_and_production(render: Render) -> None:
    dev = render("dev")
    sts = named(dev, "StatefulSet", "athenic-nats")
    assert sts["spec"]["replicas"] == 1
    assert "volumeClaimTemplates" not in sts["spec"]
    assert "cluster {" not in named(dev, "ConfigMap", "athenic-nats-config")["data"]["nats.conf"]

    prod = render("production")
    sts = named(prod, "StatefulSet", "athenic-nats")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"].startswith("nats:2.1")
    conf = named(prod, "ConfigMap", "athenic-nats-config")["data"]["nats.conf"]
    for i in range(3):
        assert f"nats://athenic-nats-{i}.athenic-nats-headless.athenic.svc:6222" in conf
    assert named(prod, "Service", "athenic-nats-headless")["spec"]["publishNotReadyAddresses"] is True
    assert named(prod, "PodDisruptionBudget", "athenic-nats")["spec"]["maxUnavailable"] == 1
    for name in ("athenic-api", "athenic-orchestrator", "athenic-operator"):
        assert env_value(container(prod, name), "NATS_REPLICAS") == "3"


def test_external_nats(render: Render) -> None:
    manifests = render("external-nats")
    assert not of_kind(manifests, "StatefulSet")
    assert "athenic-nats" not in {s["metadata"]["name"] for s in of_kind(manifests, "Service")}
    for name in ("athenic-api", "athenic-orchestrator", "athenic-operator"):
        c = container(manifests, name)
        assert env_value(c, "NATS_URL") == "nats://nats-0.broker:4222,nats://nats-1.broker:4222"
        assert env_value(c, "NATS_REPLICAS") == "3"
        assert secret_ref(c, "NATS_USER") == ("broker-login", "NATS_USER")
        assert secret_ref(c, "NATS_PASSWORD") == ("broker-login", "NATS_PASSWORD")
    policy = named(manifests, "NetworkPolicy", "athenic-orchestrator")
    broker_rule = next(r for r in policy["spec"]["egress"] if r["ports"][0]["port"] == 4222)
    assert broker_rule["to"] == VALUE_SETS["external-nats"][0]["nats"]["external"]["to"]  # type: ignore[index]

    creds = render("external-nats-creds")
    c = container(creds, "athenic-orchestrator")
    assert env_value(c, "NATS_CREDS_FILE") == "/etc/athenic/nats/nats.creds"
    assert {"name": "nats-creds", "mountPath": "/etc/athenic/nats", "readOnly": True} in c["volumeMounts"]
    volumes = named(creds, "Deployment", "athenic-orchestrator")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "nats-creds")["secret"]["secretName"] == "ngs-creds"


def test_bundled_nats_login_from_an_existing_secret(render: Render) -> None:
    manifests = render("defaults", {"nats": {"bundled": {"auth": {"existingSecret": "my-nats-login"}}}})
    assert not of_kind(manifests, "Secret"), "nothing to generate"
    nats = named(manifests, "StatefulSet", "athenic-nats")["spec"]["template"]["spec"]["containers"][0]
    assert secret_ref(nats, "NATS_PASSWORD") == ("my-nats-login", "NATS_PASSWORD")
    services = ("api", "orchestrator", "operator", "notifier")
    assert {secret_ref(nats, f"NATS_{s.upper()}_PASSWORD") for s in services} == {
        ("my-nats-login", f"{s}-password") for s in services}
    for name in ("athenic-api", "athenic-orchestrator", "athenic-operator"):
        volumes = named(manifests, "Deployment", name)["spec"]["template"]["spec"]["volumes"]
        assert next(v for v in volumes if v["name"] == "nats-login")["secret"]["secretName"] == "my-nats-login"
    # without auth the broker still only takes this release's pods (NetworkPolicy), with no login
    open_broker = render("defaults", {"nats": {"bundled": {"auth": {"enabled": False}}}})
    conf = named(open_broker, "ConfigMap", "athenic-nats-config")["data"]["nats.conf"]
    assert "authorization" not in conf
    assert "NATS_PASSWORD" not in env(container(open_broker, "athenic-api"))
