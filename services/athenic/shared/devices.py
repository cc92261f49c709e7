"""The push devices of each user, in NATS KV (``DEVICES_BUCKET``), shared by the api and the notifier.

A device is keyed by a hash of its owner and a hash of its token, so one user's devices are
one key prefix and neither a user id nor a token ever has to be key-safe. The bucket's TTL
is the registration's: registering again rewrites the key and so starts it afresh.
"""

from __future__ import annotations

import re
from typing import Final, cast

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from athenic.shared import kv, names
from athenic.shared.messages import Device, Platform, device_decoder, encode, iso_timestamp

# FCM registration tokens are opaque (about 150-180 characters today) of URL-safe base64 and ':';
# APNs device tokens are hex (32 bytes today; Apple says not to rely on the length).
TOKEN_RULES: Final = {
    "fcm": (re.compile(r"[A-Za-z0-9_:.\-]{32,4096}"), "32-4096 characters of A-Z a-z 0-9 _ : . -"),
    "apns": (re.compile(r"(?:[0-9A-Fa-f]{2}){32,100}"), "64-200 hexadecimal digits (an even number)"),
}


class InvalidDevice(ValueError):
    """A registration names no known platform, or a token that platform never issues."""


def check_device(platform: str, token: str) -> None:
    rule = TOKEN_RULES.get(platform)
    if rule is None:
        raise InvalidDevice(f"platform must be one of {', '.join(TOKEN_RULES)}, not {platform!r}")
    pattern, described = rule
    if pattern.fullmatch(token) is None:
        raise InvalidDevice(f"a {platform} token is {described}")


class DeviceRegistry:
    def __init__(self, bucket: KeyValue, js: JetStreamContext) -> None:
        self.kv = bucket
        self.js = js

    async def register(self, user: str | None, platform: str, token: str) -> tuple[Device, bool]:
        """Store (or refresh) the device; whether it is new for this user."""
        check_device(platform, token)
        key = names.device_key(user, token)
        new = await self.get(key) is None
        device = Device(platform=cast(Platform, platform), token=token, owner=user, registered_at=iso_timestamp())
        await self.kv.put(key, encode(device))
        # A token names one app install: whoever registered it last receives its notifications
        # (a phone handed to another account must not keep waking up for the first one).
        for other in await self._values(f"*.{names.device_token_hash(token)}"):
            if other != key:
                await self.kv.purge(other)
        return device, new

    async def _values(self, pattern: str) -> dict[str, bytes]:
        return await kv.live_values(self.js, self.kv, names.DEVICES_BUCKET, pattern)

    async def get(self, key: str) -> Device | None:
        try:
            entry = await self.kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        return device_decoder.decode(entry.value) if entry.value else None

    async def unregister(self, user: str | None, token: str) -> bool:
        """Remove the user's device with this token; False when the user has none such."""
        key = names.device_key(user, token)
        if await self.get(key) is None:
            return False
        await self.kv.purge(key)
        return True

    async def remove(self, key: str) -> None:
        await self.kv.purge(key)

    async def of_user(self, user: str | None) -> list[tuple[str, Device]]:
        found = []
        for key, value in (await self._values(f"{names.devices_prefix(user)}.*")).items():
            device = device_decoder.decode(value)
            if device.owner == user:
                found.append((key, device))
        return found
