"""The wire form of segment changes, as relayed through Redis and replayed from the log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson


@dataclass(frozen=True)
class LiveChange:
    id: int  # the change log's id: commit order per member, the subscription cursor
    program_id: int
    segment_key: str
    member_external_id: str
    change: str  # ENTERED | LEFT
    at: datetime


@dataclass(frozen=True)
class Relayed:
    """One relayed message: a link of the relay's chain over the change log.

    `changes` holds every change the relay publishes for the log range (after, through],
    in id order, preceded by late ones (id <= after: their transaction committed after the
    relay had moved past them). The next message's `after` is this one's `through`, so a
    process that sees `after` beyond the last `through` it heard knows it missed the range
    between them. A message with no changes is the relay's heartbeat: its position, once per pass.
    """

    after: int
    through: int
    changes: list[LiveChange]


def encode(message: Relayed) -> bytes:
    return orjson.dumps(
        {
            "after": message.after,
            "through": message.through,
            "changes": [
                [c.id, c.program_id, c.segment_key, c.member_external_id, c.change, c.at.isoformat()]
                for c in message.changes
            ],
        }
    )


def encode_legacy(changes: list[LiveChange]) -> bytes:
    """LEGACY, remove in the next release: the previous release's body, a bare list of one program's
    changes (`domain.live.relay.legacy_channel`)."""
    return orjson.dumps(
        [
            [c.id, c.program_id, c.segment_key, c.member_external_id, c.change, c.at.isoformat()]
            for c in changes
        ]
    )


def decode(data: str | bytes) -> Relayed:
    """The relayed message `data` holds; ValueError when it holds none (not JSON, or not that shape)."""
    try:
        body: dict[str, Any] = orjson.loads(data)
        rows: list[list[Any]] = body["changes"]
        changes = [LiveChange(r[0], r[1], r[2], r[3], r[4], datetime.fromisoformat(r[5])) for r in rows]
        return Relayed(int(body["after"]), int(body["through"]), changes)
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise ValueError(f"not a relayed message ({type(error).__name__}: {error})") from error
