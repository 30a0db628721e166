"""Webhook receivers for tests: a real HTTP listener on a loopback address, and a DNS of our own.

The tests' LOYALTY_WEBHOOK_ALLOW names 127.0.0.2 only, so receivers that must get
deliveries listen there, while 127.0.0.1 (and every other loopback form) stays
refused for the SSRF tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from domain.campaigns.delivery import OutboxDelivery
from domain.campaigns.destinations import Address, SystemResolver
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient

#: The one loopback address the tests' allow-list names.
ALLOWED_HOST = "127.0.0.2"
#: A public address that DNS names resolve to in tests (nothing listens there for us: never called).
PUBLIC_ADDRESS = "93.184.215.14"

CREATE_STATIC = "mutation($k: String!) { createSegment(input: {key: $k, name: $k, kind: STATIC}) { key } }"
SET_TRIGGERS = """
mutation($k: String!, $t: [SegmentTriggerInput!]!) { setSegmentTriggers(segmentKey: $k, triggers: $t) { id } }"""
ADD = (
    "mutation($k: String!, $m: [String!]) { changeStaticSegment(key: $k, addMemberExternalIds: $m) { size } }"
)
ENDPOINT = """
mutation($k: String!, $u: String!) {
  createWebhookEndpoint(key: $k, url: $u) { secret endpoint { key url active } }
}"""
DELIVERIES = """
query($s: DeliveryStatus) {
  deliveries(status: $s) { id deliveryId kind status attempts lastError endpointKey payload }
}"""
RETRY = "mutation($id: ID!) { retryDelivery(id: $id) { id status attempts } }"


async def hooked_segment(admin: GraphQLClient, endpoint_key: str = "crm") -> None:
    """Member "ann" and a STATIC segment "hooked" whose ENTER calls the endpoint `endpoint_key`."""
    await admin.data(UPSERT, {"m": [{"externalId": "ann"}]})
    await admin.data(CREATE_STATIC, {"k": "hooked"})
    trigger = {"on": "ENTER", "action": "CALL_WEBHOOK", "webhookKey": endpoint_key}
    await admin.data(SET_TRIGGERS, {"k": "hooked", "t": [trigger]})


async def webhook_segment(admin: GraphQLClient, url: str) -> str:
    """Endpoint "crm" at `url` and the segment "hooked" that calls it; returns the endpoint's secret."""
    created = (await admin.data(ENDPOINT, {"k": "crm", "u": url}))["createWebhookEndpoint"]
    assert created["endpoint"] == {"key": "crm", "url": url, "active": True}
    await hooked_segment(admin)
    secret: str = created["secret"]
    return secret


async def deliveries(admin: GraphQLClient, status: str | None = None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await admin.data(DELIVERIES, {"s": status}))["deliveries"]
    return found


async def drain(delivery: OutboxDelivery) -> None:
    """Run the delivery loop until it has nothing due."""
    while await delivery.run_once():
        pass


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A tiny HTTP/1.1 server: answers each POST with the next queued status (else 200) and `body`."""

    statuses: list[int] = field(default_factory=list)
    host: str = ALLOWED_HOST
    body: bytes = b"ok"
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/loyalty"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append(Received({"request-line": lines[0], **headers}, body))
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n\r\n".encode()
            + self.body
        )
        await writer.drain()
        writer.close()


class HostsResolver:
    """Names the test sets (like /etc/hosts), then the system's resolver for everything else."""

    def __init__(self, names: Mapping[str, list[str]] | None = None) -> None:
        self.names: dict[str, list[str]] = dict(names or {})
        self.system = SystemResolver()
        self.lookups: list[str] = []  # every host asked for, in order

    def set(self, host: str, *addresses: str) -> None:
        self.names[host] = list(addresses)

    async def resolve(self, host: str, port: int) -> list[Address]:
        self.lookups.append(host)
        if host in self.names:
            return [ipaddress.ip_address(a) for a in self.names[host]]
        return await self.system.resolve(host, port)
