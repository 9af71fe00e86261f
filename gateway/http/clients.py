"""Who is asking: the client's address, also behind a front proxy we trust.

A request that comes from one of ``trusted_proxies`` (nginx in front) carries the client's
address in ``X-Forwarded-For``: read right to left, past the proxies we trust, the first other
address is the client's. From anyone else the header is ignored — it is theirs to forge.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)


def networks(values: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(request: web.Request) -> str | None:
    remote = request.remote
    trusted: tuple[Network, ...] = request.app.get(TRUSTED_PROXIES, ())
    if remote is None or not trusted or not _trusted(remote, trusted):
        return remote
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return remote  # a malformed chain: the proxy's own address, not a guess
        if not _trusted(hop, trusted):
            return hop
    return remote


MUTUAL_TLS = web.AppKey("mutual_tls", bool)


def client_certificate(request: web.Request) -> str | None:
    """SHA-256 (hex) of the client certificate the TLS handshake verified, if any."""
    import hashlib

    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return hashlib.sha256(der).hexdigest() if der else None
