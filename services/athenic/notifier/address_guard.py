"""Where a webhook may go: the address a host name resolves to, refused when it is not public.

The check is made on the resolved address and the connection goes to that very address
(``pinned``), so a name that resolves to a public address for the check and to a private
one for the connection (DNS rebinding) cannot reach inside the cluster.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """The URL's host is (or resolves to) a loopback, private, link-local, unspecified,
    multicast or reserved address."""


def is_public(address: IP) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Pinned:
    url: str  # the URL with its host replaced by the address to connect to
    host: str  # the original host[:port]: the Host header
    server_name: str  # the original host name: TLS SNI and certificate check
    address: str


async def pinned(url: str, allow_private: bool) -> Pinned:
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise AddressRefused(f"not an http(s) URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    if not allow_private:
        inside = [str(a) for a in addresses if not is_public(a)]
        if inside:
            raise AddressRefused(f"{host} resolves to {', '.join(inside)}, which is not a public address "
                                 "(set ATHENIC_WEBHOOK_ALLOW_PRIVATE=true to allow it)")
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return Pinned(url=urlunsplit(parts._replace(netloc=netloc)), host=parts.netloc.rsplit("@", 1)[-1],
                  server_name=host, address=str(address))
