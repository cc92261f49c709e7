"""The broker login: a password from a mounted file (the chart's way) wins over the environment's."""

from __future__ import annotations

from pathlib import Path

import pytest

from athenic.shared.settings import NatsSettings, SettingsError, load

pytestmark = pytest.mark.unit


def test_the_password_file_is_read_at_connect(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-the-secret\n")
    settings = load(NatsSettings, {"NATS_USER": "api", "NATS_PASSWORD": "from-env",
                                   "NATS_PASSWORD_FILE": str(secret)})
    assert settings.login() == {"user": "api", "password": "from-the-secret"}
    secret.write_text("rotated")
    assert settings.login()["password"] == "rotated"
    assert load(NatsSettings, {"NATS_USER": "api", "NATS_PASSWORD": "from-env"}).login() == {
        "user": "api", "password": "from-env"}
    assert load(NatsSettings, {}).login() == {}


def test_an_unreadable_password_file_names_the_setting(tmp_path: Path) -> None:
    settings = load(NatsSettings, {"NATS_USER": "api", "NATS_PASSWORD_FILE": str(tmp_path / "missing")})
    with pytest.raises(SettingsError, match="NATS_PASSWORD_FILE"):
        settings.login()
