"""The ingress carries WebSockets and TLS, with the annotations of each controller; forwarded
headers are trusted only where the api is reachable from the ingress alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.manifests import (
    Manifest,
    container,
    env,
    env_value,
    named,
)

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


def test_ingress_carries_websockets_and_tls(render: Render) -> None:
    manifests = render("ingress-tls")
    ingress = named(manifests, "Ingress", "athenic")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "chat-tls", "hosts": ["chat.example.com"]}]
    (rule,) = spec["rules"]
    assert rule["host"] == "chat.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/api", "Prefix")
    assert path["backend"]["service"] == {"name": "athenic-api", "port": {"name": "http"}}
    # nginx cuts idle upgraded connections after 60 s and buffers SSE unless told otherwise
    notes = ingress["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


def test_ingress_annotations_per_controller(render: Render) -> None:
    traefik = named(render("ingress-tls", {"ingress": {"controller": "traefik", "className": "traefik"}}),
                    "Ingress", "athenic")
    assert not any(k.startswith("nginx.") for k in traefik["metadata"].get("annotations", {}))
    haproxy = named(render("ingress-tls", {"ingress": {"controller": "haproxy"}}), "Ingress", "athenic")
    assert haproxy["metadata"]["annotations"]["haproxy.org/timeout-tunnel"] == "3600s"
    mine = named(render("ingress-tls", {"ingress": {
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "7200"}}}), "Ingress", "athenic")
    assert mine["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200"


def test_forwarded_headers_trusted_only_behind_a_restricted_api(render: Render) -> None:
    """Rate limits per client need the real address; believing X-Forwarded-For from anyone is
    safe only when nothing but the ingress controller (and scrapers, the test pod) reaches the api."""
    prod = render("production")
    assert env_value(container(prod, "athenic-api"), "FORWARDED_ALLOW_IPS") == "*"
    (rule,) = named(prod, "NetworkPolicy", "athenic-api")["spec"]["ingress"]
    assert rule["from"], "the api is open to every pod"
    assert all(peer != {} and peer.get("namespaceSelector") != {} for peer in rule["from"])
    assert "FORWARDED_ALLOW_IPS" not in env(container(render("defaults"), "athenic-api"))
