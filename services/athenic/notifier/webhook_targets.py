"""Where webhooks go: the global URL (ATHENIC_WEBHOOK_URL) and each tenant's own.

Per-tenant webhooks come from a YAML (or JSON) file mounted from a Secret, since a webhook
secret has no business in a custom resource anyone allowed to read quotas could read:

    acme:
      url: https://hooks.acme.example/athenic
      secret: whsec_...

Read once at start (a changed file takes effect when the notifier restarts); a bad entry
ends the start naming the tenant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from athenic.notifier.settings import NotifierSettings, check_webhook_secret
from athenic.shared.settings import SettingsError

VARIABLE = "ATHENIC_WEBHOOK_TENANTS_FILE"


@dataclass(frozen=True)
class WebhookTargets:
    global_url: str | None = None
    global_secret: str | None = None
    tenants: dict[str, tuple[str, str]] = field(default_factory=dict)  # tenant -> (url, secret)

    @property
    def any(self) -> bool:
        return self.global_url is not None or bool(self.tenants)

    def urls(self, tenant: str) -> list[str]:
        urls = [self.global_url] if self.global_url else []
        own = self.tenants.get(tenant)
        if own is not None and own[0] not in urls:
            urls.append(own[0])
        return urls

    def secret(self, tenant: str, url: str) -> str | None:
        own = self.tenants.get(tenant)
        if own is not None and own[0] == url:
            return own[1]
        return self.global_secret if url == self.global_url else None


def load_targets(settings: NotifierSettings) -> WebhookTargets:
    tenants: dict[str, tuple[str, str]] = {}
    path = settings.athenic_webhook_tenants_file
    if path:
        try:
            document = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"bad setting {VARIABLE}: cannot read {path}: {exc}") from None
        if not isinstance(document, dict):
            raise SettingsError(f"bad setting {VARIABLE}: {path} must map tenants to {{url, secret}}")
        for tenant, entry in document.items():
            tenants[str(tenant)] = _entry(str(tenant), entry)
    return WebhookTargets(settings.athenic_webhook_url, settings.athenic_webhook_secret, tenants)


def _entry(tenant: str, entry: object) -> tuple[str, str]:
    where = f"{VARIABLE} (tenant {tenant!r})"
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or not isinstance(
            entry.get("secret"), str):
        raise SettingsError(f"bad setting {where}: each tenant needs a url and a secret")
    url, secret = entry["url"], entry["secret"]
    if not url.startswith(("https://", "http://")):
        raise SettingsError(f"bad setting {where}: {url!r} is not an http(s) URL")
    check_webhook_secret(secret, where)
    return url, secret
