"""The client's address: the TCP peer, or what X-Forwarded-For says when the peer is a trusted proxy.

Only peers in LOYALTY_TRUSTED_PROXIES (none by default) may name the client.
Their X-Forwarded-For is read from the right: each trusted proxy appends the
address it received the request from, so the right-most address that is not a
trusted proxy is the client; everything to its left is whatever the client sent.
The app resolves the address itself, once per request, in its outermost layer
(api/request_id.py; uvicorn runs without --proxy-headers).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The address rate limits and logs use; `forwarded_for` holds every X-Forwarded-For header value."""
    if peer is None:
        return UNKNOWN
    if not _trusted(peer, trusted):
        return peer
    nearest = peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return nearest  # not written by a trusted proxy: the nearest hop we can vouch for
        if not _trusted(address, trusted):
            return address
        nearest = address
    return nearest


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        return None


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)
