"""Webhook calls: endpoint validation, secrets, the signature scheme and the HTTP sender.

Each delivery is a POST of the JSON payload with
`X-Loyalty-Timestamp: <unix seconds>`, `X-Loyalty-Delivery: <uuid>` (the same on
every retry: receivers deduplicate on it) and
`X-Loyalty-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>`.
Any 2xx answer is a delivery; anything else, or no answer within the timeout, is
a failure the outbox retries.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from domain.errors import InvalidInput

MAX_URL = 2000
TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Loyalty-Signature"
TIMESTAMP_HEADER = "X-Loyalty-Timestamp"
DELIVERY_HEADER = "X-Loyalty-Delivery"
EVENT_HEADER = "X-Loyalty-Event"


def validate_url(url: str) -> str:
    if len(url) > MAX_URL:
        raise InvalidInput(f"url: longer than {MAX_URL} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"url: {url[:80]!r} is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise InvalidInput("url: must not carry credentials; the signature authenticates deliveries")
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

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, timeout: float = TIMEOUT_S) -> None:
        self.transport = transport
        self.timeout = timeout

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, timeout=self.timeout, follow_redirects=False)

    async def send(self, http: httpx.AsyncClient, request: WebhookRequest, timestamp: int) -> None:
        """Deliver once; raises `DeliveryFailed` unless the receiver answered 2xx."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "loyalty-webhooks/1",
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: request.delivery_id,
            EVENT_HEADER: request.event,
            SIGNATURE_HEADER: sign(request.secret, timestamp, request.body),
        }
        try:
            response = await http.post(request.url, content=request.body, headers=headers)
        except httpx.HTTPError as error:
            raise DeliveryFailed(f"{type(error).__name__}: {error}"[:500]) from error
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:200]}")


class DeliveryFailed(Exception):
    """One attempt did not deliver; the message says why (kept as the outbox row's last_error)."""
