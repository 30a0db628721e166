"""The wire form of a segment change, as relayed through Redis and replayed from the log."""

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


def encode(changes: list[LiveChange]) -> bytes:
    return orjson.dumps(
        [
            [c.id, c.program_id, c.segment_key, c.member_external_id, c.change, c.at.isoformat()]
            for c in changes
        ]
    )


def decode(data: str | bytes) -> list[LiveChange]:
    rows: list[list[Any]] = orjson.loads(data)
    return [LiveChange(r[0], r[1], r[2], r[3], r[4], datetime.fromisoformat(r[5])) for r in rows]
