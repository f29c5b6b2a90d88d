"""The address a request comes from, as login throttling sees it.

Behind a reverse proxy every request comes from the proxy's address: throttling on
it would lock a user out for everyone behind that proxy. The client's own address
is then the one the proxy appended to `X-Forwarded-For`, but only a proxy we trust
may say so: from anyone else the header is the client choosing its own address,
and is ignored.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(value: str) -> Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # a dual-stack socket's spelling of an IPv4 peer
    return address


def client_address(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the forwarded address when REMOTE_ADDR is a trusted proxy.

    `X-Forwarded-For` is read from the right: each proxy appends the address it was
    connected from, and a client may write anything to the left of that. The first
    hop that is not itself a trusted proxy is the client.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    current = _address(remote or "")
    if current is None or not any(current in network for network in networks):
        return remote
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        address = _address(hop)
        if address is None:
            break  # not an address: the proxy that wrote it is the last one we know
        current = address
        if not any(address in network for network in networks):
            break
    return str(current)
