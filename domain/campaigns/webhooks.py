"""Webhook calls: endpoint validation, secrets, the signature scheme and the HTTP sender.

Each delivery is a POST of the JSON payload with
`X-Loyalty-Timestamp: <unix seconds>`, `X-Loyalty-Delivery: <uuid>` (the same on
every retry: receivers deduplicate on it) and
`X-Loyalty-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>`.
Any 2xx answer is a delivery; anything else, or no answer within the timeout, is
a failure the outbox retries. Before each attempt the destination is checked
again (`destinations.py`) and the request goes to the address that was checked.
A failure is recorded as the status code only ("HTTP 500") or one generic text
for every network failure, so that neither a receiver's answer nor the
difference between a closed, filtered or refusing port reaches API callers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from domain.campaigns.destinations import DestinationPolicy, DestinationRefused
from domain.errors import InvalidInput

log = logging.getLogger(__name__)

MAX_URL = 2000
TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Loyalty-Signature"
TIMESTAMP_HEADER = "X-Loyalty-Timestamp"
DELIVERY_HEADER = "X-Loyalty-Delivery"
EVENT_HEADER = "X-Loyalty-Event"
#: lastError of every attempt that got no HTTP answer (DNS, connection, TLS, timeout alike).
NO_ANSWER = "no HTTP answer (the receiver could not be reached or did not answer in time)"


async def validate_url(url: str, destinations: DestinationPolicy) -> str:
    """An absolute http(s) URL without credentials, to a destination the policy allows."""
    if len(url) > MAX_URL:
        raise InvalidInput(f"url: longer than {MAX_URL} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"url: {url[:80]!r} is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise InvalidInput("url: must not carry credentials; the signature authenticates deliveries")
    try:
        await destinations.check(url)
    except DestinationRefused as refused:
        raise InvalidInput(f"url: {refused}") from None
    try:
        httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidInput(f"url: {url[:80]!r} is not a valid URL") from None
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
    """POSTs signed deliveries; one pooled client per pass of the delivery loop."""

    def __init__(
        self,
        destinations: DestinationPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.destinations = destinations or DestinationPolicy()
        self.transport = transport
        self.timeout = timeout

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, timeout=self.timeout, follow_redirects=False)

    async def send(self, http: httpx.AsyncClient, request: WebhookRequest, timestamp: int) -> None:
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
            # Connect to the checked address; the Host header, TLS SNI and certificate check keep the name.
            url = httpx.URL(request.url)
            headers["Host"] = url.netloc.decode("ascii")
            extensions = {"sni_hostname": destination.host} if url.scheme == "https" else {}
            async with http.stream(
                "POST",
                url.copy_with(host=destination.address_text),
                content=request.body,
                headers=headers,
                extensions=extensions,
            ) as response:
                status = response.status_code  # the body is never read
        except Exception as error:
            log.info("webhook %s to %s got no answer: %r", request.delivery_id, destination.host, error)
            raise DeliveryFailed(NO_ANSWER) from error
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}")


class DeliveryFailed(Exception):
    """One attempt did not deliver; the message says why (kept as the outbox row's last_error)."""
