"""Where a process stands in the relayed chain (`Relayed`), and what it missed.

Pure bookkeeping, no I/O: the bus feeds it every relayed message and replays the
ranges it reports missing from the change log before handing out the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from domain.live.messages import LiveChange, Relayed

#: Late and replayed change ids remembered, so that a late change arriving twice (a republish, or
#: after a replay that already read it from the log) is handed out once.
REMEMBERED = 10_000


@dataclass(frozen=True)
class Missed:
    """The log range (after, through] that this process did not hear."""

    after: int
    through: int


class RelayedSequence:
    """This process's position in the chain: every change up to it was handed out, or is older than it."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.position: int | None = None
        self._remembered = remembered
        self._seen: dict[int, None] = {}  # insertion-ordered set of late / replayed ids

    def anchor(self, position: int) -> None:
        """Start from `position` (the relay's stored one) unless the chain already has a position."""
        if self.position is None:
            self.position = position

    def take(self, message: Relayed) -> tuple[Missed | None, list[LiveChange]]:
        """The range missed before `message`, if any, and its changes not handed out yet, in order.

        The missed range must be replayed from the log before those changes are handed out.
        """
        if self.position is None:  # not anchored: this message starts the chain
            self.position = message.after
        missed = Missed(self.position, message.after) if message.after > self.position else None
        floor = max(self.position, message.after)
        fresh: list[LiveChange] = []
        for change in message.changes:
            if change.id > message.after:  # in sequence; at most `floor` was handed out (or replays)
                if change.id > floor:
                    fresh.append(change)
            elif change.id <= self.position and change.id not in self._seen:  # late, not yet seen
                self.remember([change.id])
                fresh.append(change)
            # a late change in the missed range comes with its replay
        self.position = max(self.position, message.through)
        return missed, fresh

    def remember(self, ids: Iterable[int]) -> None:
        """Ids handed out outside the chain's order (late, or replayed from the log)."""
        for id_ in ids:
            self._seen[id_] = None
        while len(self._seen) > self._remembered:
            del self._seen[next(iter(self._seen))]
