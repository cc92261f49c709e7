"""The senders the settings call for: FCM and APNs when their keys are mounted, webhooks when a URL is set."""

from __future__ import annotations

from functools import partial

from athenic.notifier.apns import ApnsSender
from athenic.notifier.content import notification
from athenic.notifier.fcm import FcmSender
from athenic.notifier.results import Sender
from athenic.notifier.settings import NotifierSettings
from athenic.notifier.webhook_targets import WebhookTargets
from athenic.notifier.webhooks import WebhookSender
from athenic.shared.settings import SettingsError


def make_senders(settings: NotifierSettings, targets: WebhookTargets) -> dict[str, Sender]:
    render = partial(notification, preview=settings.athenic_notify_preview,
                     preview_chars=settings.athenic_notify_preview_chars)
    timeout = settings.athenic_notify_timeout_seconds
    senders: dict[str, Sender] = {}
    try:
        if settings.athenic_fcm_credentials_file:
            senders["fcm"] = FcmSender(settings.athenic_fcm_credentials_file, settings.athenic_fcm_project_id,
                                       settings.athenic_fcm_base_url, timeout, render)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"bad setting ATHENIC_FCM_CREDENTIALS_FILE: {exc}") from None
    try:
        if settings.athenic_apns_key_file:
            assert settings.athenic_apns_key_id and settings.athenic_apns_team_id and settings.athenic_apns_topic
            senders["apns"] = ApnsSender(settings.athenic_apns_key_file, settings.athenic_apns_key_id,
                                         settings.athenic_apns_team_id, settings.athenic_apns_topic,
                                         settings.athenic_apns_base_url, settings.athenic_apns_ca_file,
                                         timeout, render)
    except OSError as exc:
        raise SettingsError(f"bad setting ATHENIC_APNS_KEY_FILE/ATHENIC_APNS_CA_FILE: {exc}") from None
    if targets.any:
        senders["webhook"] = WebhookSender(targets, settings.athenic_webhook_allow_private, timeout)
    return senders
