"""Settings from the environment: one typed class per concern, loaded once at start.

Each class is a msgspec struct whose field names are the environment variables themselves;
``load`` converts the strings and fails with the name of the first bad or missing variable.
An empty variable counts as unset (what an unset Helm value renders to).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Literal, TypeVar

import msgspec

T = TypeVar("T", bound=msgspec.Struct)

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class SettingsError(Exception):
    """A configuration value is missing or invalid; the message names the variable."""


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    env = os.environ if environ is None else environ
    values = {key: value for key, value in env.items() if value != ""}
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec says e.g. "Expected `int >= 1`, got `0` - at `$.NATS_REPLICAS`"
        text = str(exc)
        detail, _, where = text.rpartition(" - at `$.")
        name = where.rstrip("`") if detail else "?"
        raise SettingsError(f"bad setting {name}: {detail or text}") from None


SECRET_WORDS = ("key", "secret", "password", "token")


class EnvSettings(msgspec.Struct, frozen=True, rename=str.upper):
    """Base of every settings class: its repr masks secrets, so logging one leaks nothing."""

    def __repr__(self) -> str:
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and any(word in name for word in SECRET_WORDS):
                value = "***"
            shown.append(f"{name.upper()}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


@contextmanager
def exit_on_bad_settings(program: str) -> Iterator[None]:
    """Around a service's settings loads: a bad value ends it at once, naming the variable (exit 2)."""
    try:
        yield
    except SettingsError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class NatsSettings(EnvSettings, frozen=True, rename=str.upper):
    """The broker and the topology every service provisions at start."""

    nats_url: str = "nats://127.0.0.1:4222"
    nats_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds_file: str | None = None
    # the password in a file (a mounted Secret) rather than in the environment; wins over NATS_PASSWORD
    nats_password_file: str | None = None
    athenic_response_ttl_seconds: Positive = 24 * 3600
    athenic_dedupe_window_seconds: Positive = 120
    athenic_max_deliver: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    athenic_ack_wait_seconds: Annotated[int, msgspec.Meta(ge=5)] = 30
    athenic_request_max_age_seconds: Positive = 7 * 24 * 3600
    # The conversation log: how long a turn is kept, and how many turns of one conversation.
    athenic_turn_max_age_seconds: Positive = 30 * 24 * 3600
    athenic_turns_per_conversation: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # A POST retried with the same Idempotency-Key within this window answers as the first did.
    athenic_idempotency_window_seconds: Positive = 600
    # Notifications: a device registration lapses this long after its last (re-)registration; an open
    # WebSocket/SSE stream counts as present this long after its last heartbeat; a finished-turn event
    # or a delivery not done within the stream's age is dropped.
    athenic_device_ttl_seconds: Positive = 60 * 24 * 3600
    athenic_presence_ttl_seconds: Annotated[int, msgspec.Meta(ge=3)] = 30
    athenic_notify_max_age_seconds: Positive = 24 * 3600

    def login(self) -> dict[str, str]:
        """nats-py's connect options for our login (read at connect: a rotated file is picked up)."""
        options: dict[str, str] = {}
        if self.nats_user:
            options["user"] = self.nats_user
            password = self.nats_password
            if self.nats_password_file:
                try:
                    with open(self.nats_password_file, encoding="utf-8") as handle:
                        password = handle.read().strip()
                except OSError as exc:
                    raise SettingsError(f"bad setting NATS_PASSWORD_FILE: cannot read {self.nats_password_file}: "
                                        f"{exc.strerror}") from None
            if password is not None:
                options["password"] = password
        if self.nats_creds_file:
            options["user_credentials"] = self.nats_creds_file
        return options

    @property
    def servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]


class FileSettings(EnvSettings, frozen=True, rename=str.upper):
    """Conversation files (README: "Conversation files"): limits on uploads and on what runs make."""

    # One file, uploaded or made by a run.
    athenic_file_max_bytes: Annotated[int, msgspec.Meta(ge=1, le=1024 * 1024 * 1024)] = 10 * 1024 * 1024
    # All of one conversation's files together, and how many it may have.
    athenic_conversation_files_max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 50 * 1024 * 1024
    athenic_conversation_max_files: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    # Files one run may leave (files/out and image results together); the rest are not kept.
    athenic_run_max_files: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 16


class LogSettings(EnvSettings, frozen=True, rename=str.upper):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"] = "INFO"
    log_format: Literal["json", "console"] | None = None
