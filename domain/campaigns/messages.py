"""Messages to members: consent (the channel choice) and the provider port (SMS, push, e-mail, in-app).

A message goes only to a channel the member accepted (`Member.channels`): the
first of the sender's preferred channels the member accepted, else the member's
own first choice. A member who accepted none gets nothing: the message is
recorded SUPPRESSED (`domain.campaigns.outgoing`), never sent on a fallback.
A sendable message is a `messages` row (QUEUED) and an outbox row written in the
sender's transaction; the delivery loop hands it to the `MessageProvider` after
commit and marks it SENT, or FAILED once its outbox row is dead. Providers are
adapters outside the domain; the default one only logs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from domain.enums import Channel

log = logging.getLogger(__name__)

#: `messages.error` of a SUPPRESSED message.
NO_ACCEPTED_CHANNEL = "suppressed: the member accepted no channel"


class MessageStatus(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    FAILED = "FAILED"
    #: Never sent: the member accepted no channel (consent).
    SUPPRESSED = "SUPPRESSED"


def choose_channel(accepted: Sequence[str], preferred: Sequence[str] = ()) -> Channel | None:
    """The channel a message goes on: the first of `preferred` (the sender's order) that the member
    accepted, else the first of `accepted` (the member's order); None when the member accepted none."""
    allowed = [Channel(c) for c in accepted if c in Channel.__members__]
    for channel in preferred:
        if channel in allowed:
            return Channel(channel)
    return allowed[0] if allowed else None


def stored_channel(column: str | None) -> Channel | None:
    """A `messages.channel` value as a channel; None for a SUPPRESSED message, which has none."""
    return None if column is None else Channel(column)


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
