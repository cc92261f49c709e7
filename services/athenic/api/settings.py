"""api settings (environment variables, see the README's configuration table)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from athenic.shared.settings import Port, PositiveFloat


class ApiSettings(msgspec.Struct, frozen=True, rename=str.upper):
    api_server_port: Port = 3000
    api_host: str = "0.0.0.0"
    # Largest accepted `message`, in UTF-8 bytes.
    athenic_max_message_bytes: Annotated[int, msgspec.Meta(ge=1, le=1024 * 1024)] = 16 * 1024
    # How long a POST may spend getting the broker's acknowledgement before it answers 503.
    athenic_publish_deadline_seconds: PositiveFloat = 1.5
    athenic_shutdown_grace_seconds: PositiveFloat = 10.0

    @property
    def max_body_bytes(self) -> int:
        # JSON escaping can grow a message up to 6x (\uXXXX); leave room for the envelope.
        return self.athenic_max_message_bytes * 6 + 1024
