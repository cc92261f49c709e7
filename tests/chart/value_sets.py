"""The value sets the chart is rendered with, each what a platform team would plausibly
install, and the Kubernetes version the manifests are rendered for and validated against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.paths import REPO_ROOT

# The Kubernetes version the manifests are rendered for and validated against.
KUBE_VERSION = "1.33.0"


VALUE_SETS: dict[str, list[Path | dict[str, Any]]] = {
    "defaults": [],
    "ingress-tls": [{
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": "chat.example.com"}],
            "tls": [{"secretName": "chat-tls", "hosts": ["chat.example.com"]}],
        },
    }],
    "external-nats": [{
        "nats": {"mode": "external", "external": {
            "url": "nats://nats-0.broker:4222,nats://nats-1.broker:4222",
            "existingSecret": "broker-login",
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "broker"}}}],
        }},
    }],
    "external-nats-creds": [{
        "nats": {"mode": "external", "external": {"url": "tls://connect.ngs.global", "credsSecret": "ngs-creds"}},
    }],
    "auth-on": [{
        "auth": {"mode": "supabase", "tenantClaim": "app_metadata.tenant",
                 "supabase": {"url": "https://proj.supabase.co", "existingSecret": "supabase-jwt"}},
        "e2b": {"existingSecret": "e2b-key", "template": "athenic-python"},
        "llm": {"enabled": True, "baseUrl": "https://llm.example.com/v1", "existingSecret": "llm-key"},
    }],
    "inline-secrets": [{
        "auth": {"mode": "supabase", "supabase": {"jwtSecret": "hs256-secret-value"}},
        "e2b": {"apiKey": "e2b_inline_key"},
        "llm": {"enabled": True, "apiKey": "sk-inline"},
    }],
    "notifications": [{
        "notifier": {
            "preview": True,
            "fcm": {"enabled": True, "existingSecret": "fcm-service-account", "projectId": "athenic-prod"},
            "apns": {"enabled": True, "existingSecret": "apns-key", "keyId": "ABC123DEFG", "teamId": "TEAM123456",
                     "topic": "dev.athenic.app"},
            "webhook": {"url": "https://hooks.example.com/athenic", "existingSecret": "athenic-webhook",
                        "tenantsSecret": "athenic-tenant-webhooks"},
        },
    }],
    "production": [REPO_ROOT / "deploy" / "values-production.yaml"],
    "dev": [REPO_ROOT / "deploy" / "values-dev.yaml"],
    "local-bubblewrap": [{
        "sandbox": {"backend": "local",
                    "local": {"isolation": "bubblewrap", "seccompProfile": "profiles/athenic-bwrap.json"}},
    }],
}
