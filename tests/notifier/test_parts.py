"""Notifier pieces without a network: the webhook address guard, settings checks, notification text."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from athenic.notifier.address_guard import AddressRefused, pinned
from athenic.notifier.content import notification
from athenic.notifier.settings import NotifierSettings
from athenic.notifier.webhook_targets import load_targets
from athenic.shared import names
from athenic.shared.messages import TurnFinished
from athenic.shared.settings import SettingsError, load

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost:8080/hook", "https://10.1.2.3/hook", "http://192.168.0.10/",
    "http://172.16.5.4/", "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://0.0.0.0/",
    "http://224.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/", "http://[fe80::1]/",
    "http://[fd00::1]/",
])
def test_private_and_special_addresses_are_refused(url: str) -> None:
    with pytest.raises(AddressRefused, match="not a public address"):
        asyncio.run(pinned(url, allow_private=False))


def test_allow_private_lets_them_through_pinned_to_the_resolved_address() -> None:
    target = asyncio.run(pinned("http://localhost:8080/hook?x=1", allow_private=True))
    assert target.address in ("127.0.0.1", "::1")
    assert target.host == "localhost:8080" and target.server_name == "localhost"
    assert target.url.endswith(":8080/hook?x=1") and "localhost" not in target.url


def test_a_public_address_is_pinned() -> None:
    target = asyncio.run(pinned("https://93.184.215.14/hooks", allow_private=False))
    assert target.url == "https://93.184.215.14/hooks" and target.address == "93.184.215.14"


def test_only_http_urls() -> None:
    with pytest.raises(AddressRefused):
        asyncio.run(pinned("file:///etc/passwd", allow_private=True))


@pytest.mark.parametrize(("env", "names_it"), [
    ({"ATHENIC_WEBHOOK_URL": "https://example.com/h"}, "ATHENIC_WEBHOOK_SECRET"),
    ({"ATHENIC_WEBHOOK_URL": "https://example.com/h", "ATHENIC_WEBHOOK_SECRET": "not-whsec"}, "ATHENIC_WEBHOOK_SECRET"),
    ({"ATHENIC_WEBHOOK_URL": "https://example.com/h", "ATHENIC_WEBHOOK_SECRET": "whsec_c2hvcnQ="},
     "ATHENIC_WEBHOOK_SECRET"),
    ({"ATHENIC_WEBHOOK_URL": "ftp://example.com/h"}, "ATHENIC_WEBHOOK_URL"),
    ({"ATHENIC_APNS_KEY_FILE": "/k.p8"}, "ATHENIC_APNS_KEY_ID"),
    ({"ATHENIC_FCM_BASE_URL": "fcm.googleapis.com"}, "ATHENIC_FCM_BASE_URL"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], names_it: str) -> None:
    with pytest.raises(SettingsError, match=names_it):
        load(NotifierSettings, env).check()


def test_settings_hide_secrets_in_their_repr() -> None:
    secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    settings = load(NotifierSettings, {"ATHENIC_WEBHOOK_URL": "https://example.com/h",
                                       "ATHENIC_WEBHOOK_SECRET": secret}).check()
    assert secret not in repr(settings)


def test_generic_text_unless_previews_are_on() -> None:
    event = TurnFinished(request_id="r", client_id="c", tenant="t", owner=None, status="completed",
                         timestamp="2026-01-01T00:00:00.000Z", preview="  The   answer\nis 42  ")
    assert notification(event, preview=False, preview_chars=100).body == "Your answer is ready."
    assert notification(event, preview=True, preview_chars=100).body == "The answer is 42"
    assert notification(event, preview=True, preview_chars=5).body == "The…"


def test_keys_and_subjects_never_carry_raw_ids() -> None:
    key = names.device_key("user.with.dots*>", "tok/en:with:colons")
    assert key.count(".") == 1 and "*" not in key and ">" not in key
    assert names.device_key(None, "t").startswith("anonymous.")
    assert names.finished_subject("acme", "abc") == "athenic.notify.finished.acme.abc"
    assert names.finished_subject("a.b*", "abc").count(".") == 4
    with pytest.raises(ValueError, match="clientId"):
        names.finished_subject("acme", "a.b")


@pytest.mark.parametrize(("document", "says"), [
    ("acme: {url: https://h.example.com/x}", "tenant 'acme'"),
    ("acme: {url: ftp://h.example.com/x, secret: whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=}", "http"),
    ("acme: {url: https://h.example.com/x, secret: plain}", "whsec_"),
    ("- just a list", "map tenants"),
])
def test_a_bad_tenants_file_names_the_tenant(tmp_path: Path, document: str, says: str) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(document)
    with pytest.raises(SettingsError, match=says):
        load_targets(load(NotifierSettings, {"ATHENIC_WEBHOOK_TENANTS_FILE": str(path)}))


def test_tenant_targets_add_to_the_global_one(tmp_path: Path) -> None:
    secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    path = tmp_path / "tenants.yaml"
    path.write_text(f"acme: {{url: 'https://acme.example/h', secret: '{secret}'}}")
    targets = load_targets(load(NotifierSettings, {"ATHENIC_WEBHOOK_TENANTS_FILE": str(path),
                                                   "ATHENIC_WEBHOOK_URL": "https://all.example/h",
                                                   "ATHENIC_WEBHOOK_SECRET": secret.replace("M", "N")}))
    assert targets.urls("acme") == ["https://all.example/h", "https://acme.example/h"]
    assert targets.urls("globex") == ["https://all.example/h"]
    assert targets.secret("acme", "https://acme.example/h") == secret
    assert targets.secret("globex", "https://acme.example/h") is None
