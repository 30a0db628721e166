"""Where webhooks may go: public addresses on web ports, unless the operator's allow-list names them.

A webhook URL is checked when its endpoint is created and again before every
delivery. The check resolves the host once (numeric forms such as
`2130706433`, `0177.0.0.1` or `0x7f.1` are read as the OS resolver reads them)
and accepts the destination only when every address it resolves to is public
(`is_global`, not multicast, reserved or unspecified; IPv4 addresses embedded
in IPv6 ones are checked too) or covered by the allow-list. The sender then
connects only to the addresses that were checked, so a DNS answer that changes
between check and connect (rebinding) cannot redirect it. Lookups run on a few
threads of their own (`getaddrinfo` blocks its thread until the OS answers, even
after the wait for it has timed out), so slow DNS cannot fill the event loop's
default executor that other code shares; the delivery loop resolves each host once
per pass (`resolving_once`).

Public destinations may use ports 80, 443, 8080 and 8443 only. The allow-list
(`LOYALTY_WEBHOOK_ALLOW`, comma- or space-separated) lifts both rules:

- `hooks.internal`: URLs with this host name, whatever it resolves to, any port;
- `hooks.internal:8080`: the same, on that port only;
- `10.1.2.3`, `10.0.0.0/8`, `::1`, `fd00::/8`: addresses in that network, any port;
- `10.1.2.3:9000`, `10.0.0.0/8:9000`, `[::1]:9000`, `[fd00::/8]:9000`: on that port only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Protocol
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Ports a public destination may use without being named in the allow-list.
WEB_PORTS = frozenset({80, 443, 8080, 8443})
#: A host that has not resolved by then counts as not resolving.
RESOLVE_TIMEOUT_S = 5.0
#: Threads for getaddrinfo: lookups beyond this many wait (and time out) in their queue.
RESOLVER_THREADS = 4
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?\Z")
_ALLOW_HINT = "unless LOYALTY_WEBHOOK_ALLOW names it"


class DestinationRefused(Exception):
    """The URL may not be called; the message says why, without echoing what the host resolved to."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[Address]:
        """The addresses `host` resolves to; raises OSError when it does not resolve."""
        ...


_LOOKUPS = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="webhook-dns")


class SystemResolver:
    """The operating system's resolver (getaddrinfo), on the lookup threads, never the event loop."""

    async def resolve(self, host: str, port: int) -> list[Address]:
        lookup = partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = await asyncio.get_running_loop().run_in_executor(_LOOKUPS, lookup)
        found: list[Address] = []
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])  # drop an IPv6 scope id
            if address not in found:
                found.append(address)
        return found


class OnceResolver:
    """Resolves each (host, port) once and shares the answer, or the failure, with every caller,
    including concurrent ones: one pass of the delivery loop looks each webhook host up once."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._lookups: dict[tuple[str, int], asyncio.Task[list[Address]]] = {}

    async def resolve(self, host: str, port: int) -> list[Address]:
        lookup = self._lookups.get((host, port))
        if lookup is None:
            lookup = self._lookups[(host, port)] = asyncio.create_task(self.resolver.resolve(host, port))
        # a caller that stops waiting (its timeout) leaves the lookup running for the others
        return list(await asyncio.shield(lookup))


@dataclass(frozen=True)
class AllowEntry:
    host: str | None = None
    network: Network | None = None
    port: int | None = None

    def names(self, host: str, port: int) -> bool:
        return self.host == host and self.port in (None, port)

    def covers(self, address: Address, port: int) -> bool:
        return self.network is not None and address in self.network and self.port in (None, port)


@dataclass(frozen=True)
class AllowList:
    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Parse LOYALTY_WEBHOOK_ALLOW's entries; ValueError names the first one that is not valid."""
        return cls(tuple(_allow_entry(raw) for raw in entries))

    def names(self, host: str, port: int) -> bool:
        return any(e.names(host, port) for e in self.entries)

    def covers(self, address: Address, port: int) -> bool:
        return any(e.covers(address, port) for e in self.entries)


def _allow_entry(raw: str) -> AllowEntry:
    text = raw.strip().lower()
    port: int | None = None
    if text.startswith("["):  # [IPv6 or IPv6 network]:port
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{raw!r} is not a host, host:port, address or network")
        text, port = inside, _port(raw, rest[1:]) if rest else None
    elif text.count(":") == 1:  # host:port, IPv4:port or IPv4 network:port
        text, _, port_text = text.partition(":")
        port = _port(raw, port_text)
    try:
        return AllowEntry(network=ipaddress.ip_network(text, strict=False), port=port)
    except ValueError:
        pass
    if _HOST_NAME.match(text) and not text.replace(".", "").isdigit():
        return AllowEntry(host=text.rstrip("."), port=port)
    raise ValueError(f"{raw!r} is not a host, host:port, address or network")


def _port(raw: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{raw!r}: the port must be a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True)
class Destination:
    """A checked URL and the addresses it may connect to, in the resolver's order."""

    url: str
    host: str
    port: int
    addresses: tuple[Address, ...]

    @property
    def address(self) -> Address:
        return self.addresses[0]


class DestinationPolicy:
    """Decides whether a webhook URL may be called, and where to connect for it."""

    def __init__(
        self,
        allow: AllowList | None = None,
        resolver: Resolver | None = None,
        ports: frozenset[int] = WEB_PORTS,
    ) -> None:
        self.allow = allow or AllowList()
        self.resolver = resolver or SystemResolver()
        self.ports = ports

    def resolving_once(self) -> DestinationPolicy:
        """This policy, looking each host up once however often it is asked (one delivery pass)."""
        return DestinationPolicy(self.allow, OnceResolver(self.resolver), self.ports)

    async def check(self, url: str) -> Destination:
        """The destination to connect to; DestinationRefused when the URL may not be called."""
        try:
            parts = urlsplit(url)
        except ValueError:
            raise DestinationRefused(f"{url[:80]!r} is not a valid URL") from None
        host = (parts.hostname or "").rstrip(".")
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except (ValueError, KeyError):
            raise DestinationRefused(f"{url[:80]!r} has no valid http(s) port") from None
        named = self.allow.names(host, port)
        literal = _literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = await asyncio.wait_for(self.resolver.resolve(host, port), RESOLVE_TIMEOUT_S)
            except (OSError, UnicodeError, TimeoutError):
                addresses = []
            if not addresses:
                raise DestinationRefused(_unresolved(host))
        if not named:
            for address in addresses:
                if not self.allow.covers(address, port) and not is_public(address):
                    if literal is not None:
                        shown = host if _is_standard_address(host) else f"{host} ({literal})"
                        raise DestinationRefused(f"{shown} is not a public address ({_ALLOW_HINT})")
                    raise DestinationRefused(_unresolved(host))
            if port not in self.ports and not all(self.allow.covers(a, port) for a in addresses):
                allowed = ", ".join(str(p) for p in sorted(self.ports))
                raise DestinationRefused(
                    f"port {port} is not allowed (public destinations use ports {allowed}, {_ALLOW_HINT})"
                )
        return Destination(url, host, port, tuple(addresses))


def _unresolved(host: str) -> str:
    return f"host {host!r} does not resolve to public addresses only ({_ALLOW_HINT})"


def _is_standard_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _literal_address(host: str) -> Address | None:
    """`host` as an IP address, reading IPv4's numeric forms as the OS resolver does (inet_aton)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_public(address: Address) -> bool:
    """Globally routable unicast, including any IPv4 address the IPv6 one embeds."""
    for candidate in (address, *_embedded_ipv4(address)):
        if (
            not candidate.is_global
            or candidate.is_multicast
            or candidate.is_reserved
            or candidate.is_unspecified
        ):
            return False
    return True


def _embedded_ipv4(address: Address) -> Sequence[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return ()
    # NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) addresses are reserved, refused as such
    embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    return [a for a in embedded if a is not None]
