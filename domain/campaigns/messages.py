"""Messages to members: the channel choice and the provider port (SMS, push, e-mail, in-app).

A SEND_MESSAGE trigger records a `messages` row (QUEUED) and an outbox row in the
transaction of the membership change; the delivery loop hands it to the
`MessageProvider` after commit and marks it SENT, or FAILED once its outbox row
is dead. Providers are adapters outside the domain; the default one only logs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from domain.enums import Channel

log = logging.getLogger(__name__)

#: Used when a member lists no channel and the trigger names no fallbackChannel.
DEFAULT_CHANNEL = Channel.IN_APP


class MessageStatus(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    FAILED = "FAILED"


def preferred_channel(channels: Sequence[str] | None, fallback: str | None) -> str:
    """The member's first channel; else the trigger's fallback; else DEFAULT_CHANNEL."""
    if channels:
        return channels[0]
    return fallback or DEFAULT_CHANNEL.value


@dataclass(frozen=True)
class OutgoingMessage:
    """What a provider needs to send one message; `delivery_id` is stable across retries."""

    delivery_id: str
    message_id: int
    channel: str
    template: str
    member_external_id: str
    variables: dict[str, Any]


class MessageProvider(Protocol):
    """Sends a message on its channel; raising means "not sent" (the outbox retries it)."""

    async def send(self, message: OutgoingMessage) -> None: ...


class LoggingProvider:
    """The default provider: logs the message and reports it sent."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []

    async def send(self, message: OutgoingMessage) -> None:
        log.info(
            "message %s: %s template %r to member %s",
            message.delivery_id,
            message.channel,
            message.template,
            message.member_external_id,
        )
        self.sent.append(message)
        del self.sent[:-100]  # a short memory for demos and tests, not a store
