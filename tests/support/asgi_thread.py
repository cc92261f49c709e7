"""An ASGI app served by hypercorn on a free loopback port, in a thread with its own event loop.

Hypercorn speaks HTTP/1.1 and, over TLS with ALPN, HTTP/2: what the push stand-ins need.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from tests.support.nats import free_port, wait_for_port


class ThreadedServer:
    def __init__(self, app: Any, certfile: Path | None = None, keyfile: Path | None = None,
                 h2_only: bool = False) -> None:
        self.app = app
        self.port = free_port()
        self.config = Config()
        self.config.bind = [f"127.0.0.1:{self.port}"]
        self.config.accesslog = None
        self.config.errorlog = None
        if certfile is not None:
            self.config.certfile = str(certfile)
            self.config.keyfile = str(keyfile)
            self.config.alpn_protocols = ["h2"] if h2_only else ["h2", "http/1.1"]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ThreadedServer:
        started = threading.Event()

        def main() -> None:
            async def run() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                started.set()
                await serve(self.app, self.config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

            asyncio.run(run())

        self._thread = threading.Thread(target=main, name=f"standin-{self.port}", daemon=True)
        self._thread.start()
        started.wait(10)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
