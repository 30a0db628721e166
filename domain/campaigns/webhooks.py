"""Webhook calls: endpoint validation, secrets, the signature scheme and the HTTP sender.

Each delivery is a POST of the JSON payload with
`X-Loyalty-Timestamp: <unix seconds>`, `X-Loyalty-Delivery: <uuid>` (the same on
every retry: receivers deduplicate on it) and
`X-Loyalty-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>`.
Any 2xx answer is a delivery; anything else, or no answer within the timeout, is
a failure the outbox retries. Before each attempt the destination is checked
again (`destinations.py`, each host resolved once per pass of the delivery loop),
and the request connects only to the addresses that were checked, trying them in
turn. The URL keeps its host name, so the Host header, TLS SNI, the certificate
check and the connection pool's key are all the name's: two host names behind
one address (a CDN, a shared load balancer) never share a connection.
A failure is recorded as the status code only ("HTTP 500") or one generic text
for every network failure, so that neither a receiver's answer nor the
difference between a closed, filtered or refusing port reaches API callers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import httpcore
import httpx

from domain.campaigns.destinations import Address, DestinationPolicy, DestinationRefused
from domain.errors import InvalidInput

log = logging.getLogger(__name__)

MAX_URL = 2000
TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Loyalty-Signature"
TIMESTAMP_HEADER = "X-Loyalty-Timestamp"
DELIVERY_HEADER = "X-Loyalty-Delivery"
EVENT_HEADER = "X-Loyalty-Event"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: lastError of every attempt that got no HTTP answer (DNS, connection, TLS, timeout alike).
NO_ANSWER = "no HTTP answer (the receiver could not be reached or did not answer in time)"


async def validate_url(url: str, destinations: DestinationPolicy) -> str:
    """An absolute http(s) URL without credentials, to a destination the policy allows."""
    if len(url) > MAX_URL:
        raise InvalidInput(f"url: longer than {MAX_URL} characters")
    try:  # the syntax first: it costs nothing, and the DNS lookup below can take seconds
        parts = urlsplit(url)
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        raise InvalidInput(f"url: {url[:80]!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"url: {url[:80]!r} is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise InvalidInput("url: must not carry credentials; the signature authenticates deliveries")
    try:
        await destinations.check(url)
    except DestinationRefused as refused:
        raise InvalidInput(f"url: {refused}") from None
    return url


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    signed = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class WebhookRequest:
    url: str
    secret: str
    delivery_id: str
    event: str
    body: bytes


class WebhookSender:
    """Sends signed deliveries; each pass of the delivery loop opens a `WebhookPass`."""

    def __init__(self, destinations: DestinationPolicy | None = None, timeout: float = TIMEOUT_S) -> None:
        self.destinations = destinations or DestinationPolicy()
        self.timeout = timeout
        self.ssl_context = httpx.create_ssl_context()  # httpx's default: certifi, or SSL_CERT_FILE

    def open(self) -> WebhookPass:
        return WebhookPass(self.destinations.resolving_once(), self.timeout, self.ssl_context)


class WebhookPass:
    """One pass's connections, pooled by URL origin (scheme, host name, port), and its DNS answers."""

    def __init__(self, destinations: DestinationPolicy, timeout: float, ssl_context: ssl.SSLContext) -> None:
        self.destinations = destinations
        self.backend = PinnedBackend()
        self.http = httpx.AsyncClient(
            transport=_PinnedTransport(self.backend, ssl_context), timeout=timeout, follow_redirects=False
        )

    async def __aenter__(self) -> Self:
        await self.http.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.http.__aexit__(kind, error, trace)

    async def send(self, request: WebhookRequest, timestamp: int) -> None:
        """Deliver once; raises `DeliveryFailed` unless the receiver answered 2xx."""
        try:
            destination = await self.destinations.check(request.url)
        except DestinationRefused as refused:
            raise DeliveryFailed(f"not sent: {refused}") from None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "loyalty-webhooks/1",
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: request.delivery_id,
            EVENT_HEADER: request.event,
            SIGNATURE_HEADER: sign(request.secret, timestamp, request.body),
        }
        try:
            url = httpx.URL(request.url)
            self.backend.pin(url, destination.addresses)
            async with self.http.stream("POST", url, content=request.body, headers=headers) as response:
                status = response.status_code  # the body is never read
        except Exception as error:
            log.info("webhook %s to %s got no answer: %r", request.delivery_id, destination.host, error)
            raise DeliveryFailed(NO_ANSWER) from error
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}")


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens connections to a host name's checked addresses only (in order, the next one when a
    connect fails); a host that was not pinned is never resolved, it fails to connect."""

    def __init__(self) -> None:
        self.pins: dict[tuple[str, int], tuple[Address, ...]] = {}
        self.network = httpcore.AnyIOBackend()

    def pin(self, url: httpx.URL, addresses: tuple[Address, ...]) -> None:
        """Connections for `url`'s origin go to `addresses`, keyed as httpcore names the origin."""
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
        self.pins[(url.raw_host.decode("ascii"), port)] = addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self.pins.get((host, port), ())
        failure: Exception = httpcore.ConnectError(f"{host}:{port} has no checked address")
        for address in addresses:
            try:
                return await self.network.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.network.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a connection pool that connects through `backend`. httpx takes no network
    backend, so this replaces the pool it builds by one with httpx's default limits and the backend
    (and never a proxy: deliveries connect to checked addresses only)."""

    def __init__(self, backend: PinnedBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


class DeliveryFailed(Exception):
    """One attempt did not deliver; the message says why (kept as the outbox row's last_error)."""
